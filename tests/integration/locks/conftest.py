"""Lock services on real backends: SQL on SQLite and PostgreSQL, and Redis."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field

import pytest

from payguard.config import to_async_url
from payguard.locks import LockService
from payguard.locks.redis_backend import RedisBackend
from payguard.locks.sql import SqlBackend
from payguard.store.engine import create_engine
from payguard.store.migrate import migrate
from payguard.store.uow import Database


@pytest.fixture
def redis_prefix(redis_url: str) -> Iterator[str]:
    """A random key prefix, and every key under it deleted afterwards."""
    import redis

    prefix = f"payguard-test:{uuid.uuid4().hex[:12]}:"
    yield prefix
    client = redis.Redis.from_url(redis_url)
    try:
        for name in client.scan_iter(match=prefix + "*"):
            client.delete(name)
    finally:
        client.close()


async def migrated(plain_url: str) -> Database:
    url = to_async_url(plain_url)
    await migrate(url)
    return Database(create_engine(url))


@dataclass
class LockEnv:
    """One backend under test; ``service()`` makes another client of the same lock store."""

    kind: str
    db_url: str
    database: Database
    redis_url: str | None = None
    redis_prefix: str | None = None
    services: list[LockService] = field(default_factory=list)

    def service(self) -> LockService:
        if self.kind == "redis":
            assert self.redis_url and self.redis_prefix
            svc = LockService(RedisBackend(self.redis_url, prefix=self.redis_prefix))
        else:
            svc = LockService(SqlBackend(self.database.engine))
        self.services.append(svc)
        return svc


@dataclass
class LockTarget:
    kind: str
    db_url: str
    redis_url: str | None = None
    redis_prefix: str | None = None


@pytest.fixture(params=["sql-sqlite", "sql-postgresql", "redis"])
def lock_target(request: pytest.FixtureRequest) -> LockTarget:
    """Synchronous, because the PostgreSQL fixture runs its own event loop."""
    kind = request.param
    db_fixture = "pg_url" if kind == "sql-postgresql" else "sqlite_url"
    target = LockTarget(kind="redis" if kind == "redis" else "sql",
                        db_url=str(request.getfixturevalue(db_fixture)))
    if kind == "redis":
        target.redis_url = str(request.getfixturevalue("redis_url"))
        target.redis_prefix = str(request.getfixturevalue("redis_prefix"))
    return target


@pytest.fixture
async def lock_env(lock_target: LockTarget) -> AsyncIterator[LockEnv]:
    env = LockEnv(kind=lock_target.kind, db_url=lock_target.db_url,
                  database=await migrated(lock_target.db_url),
                  redis_url=lock_target.redis_url, redis_prefix=lock_target.redis_prefix)
    try:
        yield env
    finally:
        for svc in env.services:
            await svc.close()
        await env.database.dispose()
