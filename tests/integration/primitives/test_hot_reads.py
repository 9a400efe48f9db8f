"""Hot reads (``db.hot``) on SQLite and PostgreSQL: the same rows and Python types as
through SQLAlchemy, literals and parameters bound; and on PostgreSQL the failover rules of
``store.availability``: a dead connection is dropped and the read runs once more, a server
that cannot be reached is ``DatabaseUnavailable`` (503), never a 500 or a hang."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest
from sqlalchemy import bindparam, func, insert, literal_column, select, text

from payguard.clock import as_utc
from payguard.errors import DatabaseUnavailable
from payguard.store.engine import create_engine
from payguard.store.reads import HotRead
from payguard.store.schema import users
from payguard.store.uow import Database, UnitOfWork

BY_EMAIL = HotRead(select(users.c.id, users.c.name, users.c.created_at)
                   .where(users.c.email == bindparam("email")))
BACKEND_PID = HotRead(select(func.pg_backend_pid().label("pid")))


async def test_hot_reads_match_sqlalchemy(database: Database) -> None:
    created = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)

    async def add(uow: UnitOfWork) -> None:
        await uow.conn.execute(insert(users).values(
            id="usr_hot", email="hot@t.test", name="Hot", token_hash="h" * 64,
            created_at=created))

    await database.transaction(add)
    row = await database.hot.fetch_one(BY_EMAIL, email="hot@t.test")
    assert row is not None
    assert (row.id, row.name) == ("usr_hot", "Hot")
    assert isinstance(row.created_at, datetime) and as_utc(row.created_at) == created
    assert await database.hot.fetch_one(BY_EMAIL, email="nobody@t.test") is None
    assert await database.hot.fetch_all(BY_EMAIL, email="nobody@t.test") == []
    one = await database.hot.fetch_one(HotRead(select(literal_column("1").label("one"))))
    assert one is not None and one.one == 1
    # Many at once share the small pool.
    rows = await asyncio.gather(*(database.hot.fetch_one(BY_EMAIL, email="hot@t.test")
                                  for _ in range(50)))
    assert [r.id for r in rows if r is not None] == ["usr_hot"] * 50


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
async def test_a_terminated_connection_is_dropped_and_the_read_runs_again(
        database: Database) -> None:
    """The backend behind the pooled connection is terminated (what a restarted or failed
    over server looks like). Depending on when asyncpg notices, the pool replaces the
    connection before the next read or the read fails and runs again: either way the read
    answers, from a new backend. Repeated, so both orders are met."""
    for _ in range(8):
        before = await database.hot.fetch_one(BACKEND_PID)
        assert before is not None

        async def kill(uow: UnitOfWork, pid: int = before.pid) -> None:
            await uow.conn.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})

        await database.transaction(kill)
        after = await database.hot.fetch_one(BACKEND_PID)
        assert after is not None and after.pid != before.pid


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
async def test_an_unreachable_server_is_database_unavailable(db_url: str) -> None:
    # A port nobody listens on: connection refused.
    nowhere = Database(create_engine("postgresql+asyncpg://postgres@127.0.0.1:9/none",
                                     connect_timeout=2), connect_timeout=2)
    told: list[bool] = []
    nowhere.hot.on_unavailable = lambda: told.append(True)
    try:
        with pytest.raises(DatabaseUnavailable):
            await asyncio.wait_for(nowhere.hot.fetch_one(BACKEND_PID), 10)
        # Tried twice, and each failure told the Database (its /healthz probe re-checks).
        assert told == [True, True]
    finally:
        await nowhere.dispose()
