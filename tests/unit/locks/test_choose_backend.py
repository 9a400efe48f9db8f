"""PAYGUARD_LOCK_BACKEND resolution."""

from __future__ import annotations

from pathlib import Path

import pytest

from payguard.config import Settings
from payguard.locks import LockBackendConfigError, choose_backend, create_lock_service
from payguard.store.engine import create_engine
from payguard.store.uow import Database

SQLITE = "sqlite:////tmp/x.db"
PG = "postgresql://u@h/db"


@pytest.mark.parametrize(("backend", "db", "redis", "workers", "expected"), [
    ("auto", SQLITE, None, 1, "local"),
    ("auto", SQLITE, None, 4, "sql"),
    ("auto", PG, None, 1, "sql"),
    ("auto", SQLITE, "redis://h:6379/0", 1, "redis"),
    ("auto", PG, "redis://h:6379/0", 8, "redis"),
    ("local", SQLITE, None, 1, "local"),
    ("sql", SQLITE, None, 1, "sql"),
    ("redis", SQLITE, "redis://h:6379/0", 2, "redis"),
])
def test_choice(backend: str, db: str, redis: str | None, workers: int, expected: str) -> None:
    settings = Settings(lock_backend=backend, database_url=db, redis_url=redis)
    assert choose_backend(settings, workers) == expected


def test_local_with_several_workers_is_refused_clearly() -> None:
    settings = Settings(lock_backend="local", database_url=SQLITE, workers=3)
    with pytest.raises(LockBackendConfigError, match=r"only works in one process.*3 workers"):
        choose_backend(settings)


def test_redis_without_url_is_refused() -> None:
    with pytest.raises(LockBackendConfigError, match="PAYGUARD_REDIS_URL"):
        choose_backend(Settings(lock_backend="redis", database_url=SQLITE), 1)


@pytest.mark.parametrize(("redis", "workers", "expected"), [
    (None, 1, "local"), (None, 2, "sql"), ("redis://127.0.0.1:6379/0", 1, "redis")])
async def test_create_lock_service_builds_the_chosen_backend(
        tmp_path: Path, redis: str | None, workers: int, expected: str) -> None:
    settings = Settings(database_url=f"sqlite:///{tmp_path / 'x.db'}", redis_url=redis)
    database = Database(create_engine(settings.resolved_database_url))
    svc = create_lock_service(settings, database, workers=workers)  # connects lazily
    try:
        assert svc.impl.name == expected == svc.backend
    finally:
        await svc.close()
        await database.dispose()
