"""Fencing: a paused holder whose lease lapsed cannot overwrite the next holder's work."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import Column, Integer, MetaData, String, Table, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from payguard.api.problems import http_status
from payguard.locks import StaleFencingToken
from payguard.locks.fencing import advance_fence
from payguard.store.uow import Database, UnitOfWork
from tests.integration.locks.conftest import LockEnv
from tests.support.db import committed

# A test-only table standing in for whatever a service protects with a lock.
_meta = MetaData()
documents = Table("test_fenced_documents", _meta,
                  Column("id", String(50), primary_key=True),
                  Column("body", String(200), nullable=False),
                  Column("version", Integer, nullable=False))


async def _setup(database: Database) -> None:
    async with database.engine.begin() as conn:
        await conn.run_sync(_meta.create_all)
        await conn.execute(documents.insert().values(id="doc", body="initial", version=0))


async def _write(database: Database, token: int, body: str) -> None:
    """The protected write: fence check and update in one transaction."""
    async with committed(database) as uow:
        await advance_fence(uow.conn, "doc", token)
        await uow.conn.execute(update(documents).where(documents.c.id == "doc")
                               .values(body=body, version=documents.c.version + 1))


async def _read(conn: AsyncConnection) -> tuple[str, int]:
    row = (await conn.execute(select(documents.c.body, documents.c.version))).one()
    return str(row[0]), int(row[1])


async def test_paused_holder_cannot_overwrite_the_new_holders_work(lock_env: LockEnv) -> None:
    database = lock_env.database
    await _setup(database)
    slow, fast = lock_env.service(), lock_env.service()
    paused_read = asyncio.Event()
    resume = asyncio.Event()
    outcome: list[BaseException] = []

    async def paused_holder() -> None:
        async with slow.hold("doc", ttl=0.2, wait=0) as lease:
            paused_read.set()
            await resume.wait()  # a GC pause / slow provider call outlives the lease
            assert lease.lost
            try:
                await _write(database, lease.fencing_token, "stale write")
            except StaleFencingToken as exc:
                outcome.append(exc)

    task = asyncio.create_task(paused_holder())
    await paused_read.wait()
    async with fast.hold("doc", ttl=10, wait=3) as lease:  # granted after the lapse
        await _write(database, lease.fencing_token, "new holder's work")
    resume.set()
    await task
    assert len(outcome) == 1
    assert outcome[0].code == "STALE_FENCING_TOKEN" and http_status(outcome[0]) == 409
    async with database.engine.connect() as conn:
        assert await _read(conn) == ("new holder's work", 1)
        await conn.rollback()


async def test_advance_fence_accepts_equal_and_newer_and_refuses_older(
        database: Database) -> None:
    async with committed(database) as uow:
        await advance_fence(uow.conn, "r", 5)
        await advance_fence(uow.conn, "r", 5)  # the same holder writing twice
        await advance_fence(uow.conn, "r", 7)
        with pytest.raises(StaleFencingToken):
            await advance_fence(uow.conn, "r", 6)
        await advance_fence(uow.conn, "other", 1)  # resources are independent


async def test_concurrent_writers_end_on_the_highest_token(database: Database) -> None:
    """Writers race in their own transactions; whatever the interleaving, every accepted
    write was at least as new as all before it, so the fence ends at the maximum."""
    accepted: list[int] = []

    async def writer(token: int) -> None:
        async def fn(uow: UnitOfWork) -> None:
            await advance_fence(uow.conn, "hot", token)
            # Recorded at the commit itself, so `accepted` is in commit order.
            uow.after_commit(lambda: accepted.append(token))
        try:
            await database.transaction(fn)
        except StaleFencingToken:
            pass

    tokens = [3, 9, 1, 7, 5, 10, 2, 8, 4, 6]
    await asyncio.gather(*(writer(t) for t in tokens))
    assert 10 in accepted
    assert accepted == sorted(accepted)
    from payguard.store.schema import fences
    async with database.engine.connect() as conn:
        last = (await conn.execute(select(fences.c.last_token)
                                   .where(fences.c.resource == "hot"))).scalar_one()
        await conn.rollback()
    assert last == 10
