"""Shared fixtures: real databases (SQLite file, a fresh PostgreSQL database), Redis."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from payguard.config import to_async_url
from payguard.store.engine import create_engine
from payguard.store.migrate import migrate
from payguard.store.uow import Database
from tests.support import services
from tests.support.api import ApiClient
from tests.support.server import LiveServer


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'payguard.db'}"


@pytest.fixture
def pg_url() -> Iterator[str]:
    url = services.create_pg_database()
    try:
        yield url
    finally:
        services.drop_pg_database(url)


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest) -> str:
    """A plain database URL (``sqlite:///...`` or ``postgresql://...``), fresh per test."""
    name = "sqlite_url" if request.param == "sqlite" else "pg_url"
    return str(request.getfixturevalue(name))


@pytest.fixture
async def database(db_url: str) -> AsyncIterator[Database]:
    """A migrated database on each backend, for primitive-level integration tests."""
    url = to_async_url(db_url)
    await migrate(url)
    db = Database(create_engine(url))
    try:
        yield db
    finally:
        await db.dispose()


@pytest.fixture
def redis_url() -> str:
    return services.require_redis()


@pytest.fixture
def live_server(db_url: str, tmp_path: Path) -> Iterator[LiveServer]:
    """A real ``payguard serve`` on SQLite and on PostgreSQL (parametrised via db_url)."""

    server = LiveServer(tmp_path / "data", db_url).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
async def api(live_server: LiveServer) -> AsyncIterator[ApiClient]:

    async with ApiClient(live_server.url, live_server.admin_token) as client:
        yield client
