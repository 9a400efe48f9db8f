"""The one transaction rule (``Database.transaction``) on SQLite and PostgreSQL: commit when
the function returns, roll back when it raises, replay the whole function on a transient
conflict (a real PostgreSQL deadlock), give up after the bound; reads never write."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import insert, select, text, update
from sqlalchemy.exc import DBAPIError, OperationalError

from payguard.clock import utcnow
from payguard.store.schema import fences
from payguard.store.uow import Database, UnitOfWork


async def _fences(db: Database) -> dict[str, int]:
    async with db.read() as uow:
        rows = await uow.conn.execute(select(fences.c.resource, fences.c.last_token))
        return {r.resource: int(r.last_token) for r in rows}


def _insert(resource: str, token: int = 1):  # type: ignore[no-untyped-def]
    return insert(fences).values(resource=resource, last_token=token, updated_at=utcnow())


class Boom(Exception):
    pass


async def test_commits_on_return_and_rolls_back_on_raise(database: Database) -> None:
    woken: list[str] = []

    async def ok(uow: UnitOfWork) -> str:
        await uow.conn.execute(_insert("kept"))
        uow.after_commit(lambda: woken.append("kept"))
        return "done"

    async def fails(uow: UnitOfWork) -> None:
        await uow.conn.execute(_insert("dropped"))
        uow.after_commit(lambda: woken.append("dropped"))
        raise Boom

    assert await database.transaction(ok) == "done"
    with pytest.raises(Boom):
        await database.transaction(fails)
    assert await _fences(database) == {"kept": 1}
    assert woken == ["kept"]  # after-commit hooks run only for a commit


async def test_a_transient_conflict_replays_the_whole_function(database: Database) -> None:
    calls = 0

    async def flaky(uow: UnitOfWork) -> int:
        nonlocal calls
        calls += 1
        await uow.conn.execute(_insert(f"attempt-{calls}"))
        if calls < 3:  # what SQLite says when its busy timeout runs out
            raise OperationalError("UPDATE ...", {}, Exception("database is locked"))
        return calls

    assert await database.transaction(flaky) == 3
    # Only the last attempt's write survives: the failed ones were rolled back whole.
    assert await _fences(database) == {"attempt-3": 1}


async def test_replays_are_bounded_and_other_errors_are_not_replayed(database: Database) -> None:
    calls = 0

    async def always_busy(uow: UnitOfWork) -> None:
        nonlocal calls
        calls += 1
        raise OperationalError("UPDATE ...", {}, Exception("database is locked"))

    with pytest.raises(OperationalError):
        await database.transaction(always_busy)
    assert calls == database.max_attempts

    calls = 0

    async def duplicate(uow: UnitOfWork) -> None:
        nonlocal calls
        calls += 1
        await uow.conn.execute(_insert("same"))
        await uow.conn.execute(_insert("same"))  # a constraint violation is final

    with pytest.raises(DBAPIError):
        await database.transaction(duplicate)
    assert calls == 1
    assert await _fences(database) == {}


async def test_a_real_deadlock_is_replayed_until_both_commit(pg_url: str) -> None:
    from payguard.config import to_async_url
    from payguard.store.engine import create_engine
    from payguard.store.migrate import migrate

    url = to_async_url(pg_url)
    await migrate(url)
    database = Database(create_engine(url))
    try:
        await database.transaction(lambda uow: uow.conn.execute(
            insert(fences), [{"resource": r, "last_token": 0, "updated_at": utcnow()}
                             for r in ("a", "b")]))
        both_hold_first = asyncio.Barrier(2)
        attempts = {"a": 0, "b": 0}

        def bump(first: str, second: str):  # type: ignore[no-untyped-def]
            async def fn(uow: UnitOfWork) -> None:
                attempts[first] += 1
                for i, resource in enumerate((first, second)):
                    await uow.conn.execute(update(fences).where(fences.c.resource == resource)
                                           .values(last_token=fences.c.last_token + 1))
                    if i == 0 and attempts[first] == 1:
                        await both_hold_first.wait()  # now each waits for the other's row
            return fn

        await asyncio.wait_for(asyncio.gather(database.transaction(bump("a", "b")),
                                              database.transaction(bump("b", "a"))), 60)
        # PostgreSQL broke the deadlock by failing one; it was replayed from the start.
        assert sorted(attempts.values()) == [1, 2]
        assert await _fences(database) == {"a": 2, "b": 2}
    finally:
        await database.dispose()


async def test_a_read_never_writes(database: Database) -> None:
    if database.dialect == "postgresql":
        with pytest.raises(DBAPIError, match="read-only"):
            async with database.read() as uow:
                await uow.conn.execute(_insert("sneaky"))
    else:  # SQLite has no read-only transactions: the write is rolled back at the end
        async with database.read() as uow:
            await uow.conn.execute(_insert("sneaky"))
    assert await _fences(database) == {}


async def test_the_read_only_setting_does_not_leak_to_the_next_user(pg_url: str) -> None:
    from payguard.config import to_async_url
    from payguard.store.engine import create_engine
    from payguard.store.migrate import migrate

    url = to_async_url(pg_url)
    await migrate(url)
    database = Database(create_engine(url, pool_size=1))  # one connection, reused
    try:
        async with database.read() as uow:
            await uow.conn.execute(text("SELECT 1"))
        await database.transaction(lambda uow: uow.conn.execute(_insert("after")))
        assert await _fences(database) == {"after": 1}
    finally:
        await database.dispose()
