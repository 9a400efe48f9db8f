"""A real SMTP server receives exactly one email per dedupe key.

Three dispatchers (own engines, as three processes would have) run concurrently while
every key is enqueued by ten concurrent transactions.
"""

from __future__ import annotations

import asyncio
from collections import Counter

from payguard.config import Settings
from payguard.outbox import OutboxDispatcher, message_id
from payguard.store.uow import Database

from .conftest import SmtpServer
from .helpers import enqueue_committed, enqueue_raced, outbox_rows

MAIL_FROM = "payguard@shop.example"


def smtp_settings(server: SmtpServer) -> Settings:
    return Settings(smtp_url=server.url, mail_from=MAIL_FROM)


async def wait_until_delivered(db: Database, expected: int, server: SmtpServer) -> None:
    async with asyncio.timeout(20):
        while True:
            rows = await outbox_rows(db)
            if len(rows) == expected and all(r["state"] == "sent" for r in rows):
                return
            await asyncio.sleep(0.05)


async def test_three_running_dispatchers_and_raced_enqueues_deliver_one_email_per_key(
        database: Database, peer_databases: list[Database], smtp_server: SmtpServer) -> None:
    dbs = [database, *peer_databases]
    dispatchers = [OutboxDispatcher(db, smtp_settings(smtp_server)) for db in dbs]
    stop = asyncio.Event()
    loops = [asyncio.create_task(d.run_forever(stop, interval=0.02)) for d in dispatchers]
    keys = [f"purchase-confirmation:p{i}" for i in range(6)]
    try:
        created = await asyncio.gather(
            *(enqueue_raced(dbs, key, times=10, recipient=f"{i}@example.com")
              for i, key in enumerate(keys)))
        await wait_until_delivered(database, len(keys), smtp_server)
    finally:
        stop.set()
        await asyncio.gather(*loops)

    assert [sum(c) for c in created] == [1] * len(keys)
    ids = Counter(m["Message-ID"] for m in smtp_server.messages)
    assert ids == Counter({message_id(k, MAIL_FROM): 1 for k in keys})
    by_id = {m["Message-ID"]: m for m in smtp_server.messages}
    for i, key in enumerate(keys):
        msg = by_id[message_id(key, MAIL_FROM)]
        assert (msg["To"], msg["From"], msg["Subject"]) == (
            f"{i}@example.com", MAIL_FROM, f"Order {key}")
        assert msg.get_content().replace("\r\n", "\n") == f"Body of {key}\n"  # wire CRLF
    rows = await outbox_rows(database)
    assert [(r["state"], r["attempts"], r["claimed_until"]) for r in rows] == [
        ("sent", 1, None)] * len(keys)
    assert all(r["sent_at"] is not None for r in rows)
    assert sum(d.sent_total for d in dispatchers) == len(keys)
    assert sum(d.lost_claims_total + d.failed_total for d in dispatchers) == 0


async def test_concurrent_passes_split_a_backlog_without_overlap(
        database: Database, peer_databases: list[Database], smtp_server: SmtpServer) -> None:
    for i in range(15):
        await enqueue_committed(database, f"k{i}")
    dispatchers = [OutboxDispatcher(db, smtp_settings(smtp_server))
                   for db in [database, *peer_databases]]
    results = await asyncio.gather(*(d.run_once(limit=100) for d in dispatchers))

    assert sum(r["sent"] for r in results) == 15
    assert sum(r["failed"] + r["dead"] for r in results) == 0
    assert sorted(m["Message-ID"] for m in smtp_server.messages) == sorted(
        message_id(f"k{i}", MAIL_FROM) for i in range(15))
    assert await dispatchers[0].backlog() == 0
    # Nothing left to do: another pass claims nothing and sends nothing.
    assert await dispatchers[1].run_once() == {"sent": 0, "failed": 0, "dead": 0}
    assert len(smtp_server.messages) == 15


async def test_recipient_refused_with_5xx_is_dead_at_once(
        database: Database, smtp_server: SmtpServer) -> None:
    smtp_server.recorder.refuse.add("gone@example.com")
    await enqueue_committed(database, "bad", recipient="gone@example.com")
    await enqueue_committed(database, "good", recipient="ok@example.com")
    d = OutboxDispatcher(database, smtp_settings(smtp_server))

    assert await d.run_once() == {"sent": 1, "failed": 0, "dead": 1}
    rows = {r["dedupe_key"]: r for r in await outbox_rows(database)}
    assert (rows["bad"]["state"], rows["bad"]["attempts"]) == ("dead", 1)
    assert rows["bad"]["last_error"].startswith("permanent:")
    assert "550" in rows["bad"]["last_error"]
    assert rows["good"]["state"] == "sent"
    assert [m["To"] for m in smtp_server.messages] == ["ok@example.com"]
    assert await d.backlog() == 0
