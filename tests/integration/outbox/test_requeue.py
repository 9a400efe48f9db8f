"""An operator's retry of a dead email, raced from several processes' pools on SQLite and
PostgreSQL: the message is requeued exactly once, and only a dead one."""

from __future__ import annotations

import asyncio

from sqlalchemy import update

from payguard.clock import utcnow
from payguard.outbox.claims import requeue_dead
from payguard.store.schema import outbox_messages
from payguard.store.uow import Database, UnitOfWork
from tests.integration.outbox.helpers import enqueue_committed, outbox_rows


async def _requeue(db: Database, message_id: int) -> bool:
    async def fn(uow: UnitOfWork) -> bool:
        done = await requeue_dead(uow.conn, message_id, now=utcnow())
        return done
    return await db.transaction(fn)


async def test_concurrent_retries_requeue_a_dead_message_once(
        database: Database, peer_databases: list[Database]) -> None:
    await enqueue_committed(database, "dead-one")
    await enqueue_committed(database, "still-pending")
    [dead, pending] = await outbox_rows(database)

    async def kill(uow: UnitOfWork) -> None:
        await uow.conn.execute(update(outbox_messages).where(outbox_messages.c.id == dead["id"])
                               .values(state="dead", attempts=10, last_error="550 no"))
    await database.transaction(kill)

    dbs = [database, *peer_databases]
    results = await asyncio.gather(*(_requeue(dbs[i % 3], dead["id"]) for i in range(12)))
    assert sorted(results) == [False] * 11 + [True]
    assert await _requeue(database, pending["id"]) is False  # pending: untouched

    rows = {r["dedupe_key"]: r for r in await outbox_rows(database)}
    assert (rows["dead-one"]["state"], rows["dead-one"]["attempts"]) == ("pending", 0)
    assert rows["dead-one"]["last_error"] == "550 no"  # kept for the record
    assert rows["still-pending"] == pending
