"""The webhook inbox raced directly on SQLite and PostgreSQL: one event id is applied once
by concurrent deliveries, and again only if the first application rolled back."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from sqlalchemy import func, insert, select

from payguard import inbox
from payguard.clock import utcnow
from payguard.store.schema import fences, inbox_events
from payguard.store.uow import Database, UnitOfWork


class EffectsFailed(Exception):
    pass


def _deliver(db: Database, event_id: str, applied: list[int], i: int, *,  # type: ignore[no-untyped-def]
             fail: bool = False, claimed: asyncio.Event | None = None):
    """One delivery: claim the event id and apply its effect (a row) in one transaction."""
    async def tx(uow: UnitOfWork) -> bool:
        if not await inbox.record_event(uow.conn, provider="stripe", event_id=event_id,
                                        type="checkout.session.completed", object_id="cs_1",
                                        outcome="completed"):
            return False
        if claimed is not None:
            claimed.set()
        await asyncio.sleep(0.05)  # the duplicates arrive while we work
        await uow.conn.execute(insert(fences).values(resource=f"{event_id}:{i}",
                                                     last_token=1, updated_at=utcnow()))
        if fail:
            raise EffectsFailed
        uow.after_commit(lambda: applied.append(i))
        return True
    return db.transaction(tx)


async def _effects(db: Database) -> int:
    async with db.read() as uow:
        return int(await uow.conn.scalar(select(func.count()).select_from(fences)) or 0)


async def test_concurrent_deliveries_apply_an_event_once(database: Database) -> None:
    applied: list[int] = []
    results = await asyncio.gather(*(_deliver(database, "evt_1", applied, i)
                                     for i in range(20)))
    assert results.count(True) == 1 and len(applied) == 1
    assert await _effects(database) == 1
    # A late redelivery, after the commit, is a duplicate too.
    assert await _deliver(database, "evt_1", applied, 99) is False
    async with database.read() as uow:
        assert await uow.conn.scalar(select(func.count()).select_from(inbox_events)) == 1


async def test_a_rolled_back_application_leaves_the_event_for_the_next_delivery(
        database: Database) -> None:
    applied: list[int] = []
    claimed = asyncio.Event()
    first = asyncio.create_task(_deliver(database, "evt_2", applied, 0, fail=True,
                                         claimed=claimed))
    await claimed.wait()  # the first delivery holds the event id; the others queue on it
    others = [_deliver(database, "evt_2", applied, i) for i in range(1, 8)]
    results = await asyncio.gather(first, *others, return_exceptions=True)
    assert isinstance(results[0], EffectsFailed)
    assert results[1:].count(True) == 1 and len(applied) == 1  # a duplicate took over
    assert await _effects(database) == 1


async def test_purge_removes_only_old_rows(database: Database) -> None:
    now = utcnow()
    for event_id, age in (("old", timedelta(days=40)), ("new", timedelta(days=1))):
        await database.transaction(lambda uow, e=event_id, a=age: inbox.record_event(  # type: ignore[misc]
            uow.conn, provider="stripe", event_id=e, type="t", object_id=None,
            outcome="ignored", now=now - a))
    purged = await database.transaction(
        lambda uow: inbox.purge_older_than(uow.conn, timedelta(days=30), now))
    assert purged == 1
    async with database.read() as uow:
        assert list((await uow.conn.execute(select(inbox_events.c.event_id))).scalars()) == [
            "new"]
