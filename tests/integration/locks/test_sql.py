"""SQL backend specifics: database clock, clean-up that keeps fencing tokens, has-active."""

from __future__ import annotations

import asyncio

from sqlalchemy import select

from payguard.locks import LockService
from payguard.locks.sql import SqlBackend, db_now_ms
from payguard.store.schema import lock_leases
from payguard.store.uow import Database


async def _row(database: Database, key: str) -> tuple[object, ...]:
    async with database.engine.connect() as conn:
        row = (await conn.execute(select(lock_leases).where(lock_leases.c.key == key))).one()
        await conn.rollback()
    return tuple(row)


async def _db_now(database: Database) -> int:
    async with database.engine.connect() as conn:
        now = int((await conn.execute(select(db_now_ms(database.dialect)))).scalar_one())
        await conn.rollback()
    return now


async def test_expiry_is_set_by_the_database_clock(database: Database) -> None:
    backend = SqlBackend(database.engine)
    before = await _db_now(database)
    grant = await backend.try_acquire("k", "owner-1", 5_000)
    after = await _db_now(database)
    assert grant is not None
    _, owner, token, acquired_at_ms, expires_at_ms = await _row(database, "k")
    assert (owner, token) == ("owner-1", grant.fencing_token)
    assert before <= acquired_at_ms <= after  # type: ignore[operator]
    assert expires_at_ms == grant.expires_at_ms
    assert 5_000 <= grant.expires_at_ms - before <= 5_000 + (after - before)


async def test_clean_expired_clears_owners_and_keeps_tokens(database: Database) -> None:
    backend = SqlBackend(database.engine)
    svc = LockService(backend)
    lapsed = [await svc.acquire(f"k{i}", ttl=0.05, wait=0) for i in range(3)]
    live = await svc.acquire("live", ttl=30, wait=0)
    await asyncio.sleep(0.1)
    assert not await backend.has_active("k0")
    assert await backend.has_active("live")
    assert await svc.clean_expired() == 3
    assert await svc.clean_expired() == 0
    assert (await _row(database, "k0"))[1:] == (None, lapsed[0].fencing_token, None, None)
    # The cleaned row still remembers its token: the next holder's is larger.
    async with svc.hold("k0", wait=0) as lease:
        assert lease.fencing_token == lapsed[0].fencing_token + 1
        assert await backend.has_active("k0")
    await live.release()
    assert [h.key for h in await backend.held()] == []


async def test_many_contenders_on_one_free_key_make_exactly_one_winner(
        database: Database) -> None:
    backend = SqlBackend(database.engine)
    grants = await asyncio.gather(*(backend.try_acquire("hot", f"o{i}", 10_000)
                                    for i in range(16)))
    winners = [g for g in grants if g is not None]
    assert len(winners) == 1 and winners[0].fencing_token == 1
