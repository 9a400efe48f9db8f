"""A real SMTP server (aiosmtpd) on a free port, extra dispatcher databases, a settable clock."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta

import pytest

from payguard.store.engine import create_engine
from payguard.store.uow import Database
from tests.support.smtp import SmtpServer, free_port


@pytest.fixture
def smtp_server() -> Iterator[SmtpServer]:
    """A running server."""
    server = SmtpServer(free_port())
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def smtp_down() -> Iterator[SmtpServer]:
    """A server that is not running yet: connections to its port are refused."""
    server = SmtpServer(free_port())
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
async def peer_databases(database: Database) -> AsyncIterator[list[Database]]:
    """Two more ``Database`` objects (own engines, own pools) on the same database, as
    other app processes would have."""
    url = database.engine.url.render_as_string(hide_password=False)
    peers = [Database(create_engine(url, pool_size=5)) for _ in range(2)]
    try:
        yield peers
    finally:
        for peer in peers:
            await peer.dispose()


class FakeClock:
    def __init__(self) -> None:
        self.now = datetime.now(UTC).replace(microsecond=0)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()
