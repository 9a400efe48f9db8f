"""Mailbox mode (no SMTP URL): marking a message sent is its delivery, once."""

from __future__ import annotations

import asyncio

from payguard.config import Settings
from payguard.outbox import OutboxDispatcher, list_mailbox
from payguard.store.uow import Database

from .helpers import enqueue_committed, enqueue_raced, outbox_rows


async def mailbox(db: Database, **kw: object) -> list[dict[str, object]]:
    async with db.read() as uow:
        return await list_mailbox(uow.conn, **kw)  # type: ignore[arg-type]


async def test_three_dispatchers_deliver_each_message_to_the_mailbox_once(
        database: Database, peer_databases: list[Database]) -> None:
    dbs = [database, *peer_databases]
    for i in range(4):
        assert sum(await enqueue_raced(dbs, f"a{i}", times=10, user_id="alice",
                                       recipient="alice@example.com")) == 1
    await enqueue_committed(database, "b0", user_id="bob", recipient="bob@example.com")
    assert await mailbox(database) == []  # pending is not delivered

    dispatchers = [OutboxDispatcher(db, Settings()) for db in dbs]
    results = await asyncio.gather(*(d.run_once() for d in dispatchers))

    assert sum(r["sent"] for r in results) == 5
    # Each row was claimed exactly once: a second claim would have counted a second attempt.
    assert [(r["state"], r["attempts"]) for r in await outbox_rows(database)] == [
        ("sent", 1)] * 5
    alice = await mailbox(database, user_id="alice")
    assert sorted(m["dedupe_key"] for m in alice) == ["a0", "a1", "a2", "a3"]  # type: ignore[type-var]
    assert {m["recipient"] for m in alice} == {"alice@example.com"}
    assert alice[0]["subject"] == f"Order {alice[0]['dedupe_key']}"
    assert str(alice[0]["sent_at"]).endswith("Z")
    assert [m["dedupe_key"] for m in await mailbox(database, user_id="bob")] == ["b0"]
    assert len(await mailbox(database)) == 5
    assert len(await mailbox(database, limit=2)) == 2


async def test_run_forever_delivers_on_wake_and_stops(database: Database) -> None:
    d = OutboxDispatcher(database, Settings())
    stop = asyncio.Event()
    loop = asyncio.create_task(d.run_forever(stop, interval=3600))
    try:
        await asyncio.sleep(0.1)  # the first, empty pass is done; it now idles for an hour
        await enqueue_committed(database, "k1")
        d.wake()
        async with asyncio.timeout(10):
            # Polling the database, which is the thing under test; no in-process event exists.
            while not await mailbox(database):  # noqa: ASYNC110
                await asyncio.sleep(0.02)
    finally:
        stop.set()
    async with asyncio.timeout(5):  # stop interrupts the idle wait at once
        await loop
    assert [m["dedupe_key"] for m in await mailbox(database)] == ["k1"]
    assert d.sent_total == 1 and d.errors_total == 0
