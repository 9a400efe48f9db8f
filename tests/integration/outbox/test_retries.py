"""Failures: backoff while SMTP is down, delivery when it returns, dead after max attempts,
recovery from a dispatcher that died holding a claim, and the fencing of stale claims."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from payguard.config import Settings
from payguard.outbox import ClaimedMessage, OutboxDispatcher, SmtpTransport, claims, message_id
from payguard.store.uow import Database
from tests.support.db import committed

from .conftest import FakeClock, SmtpServer
from .helpers import enqueue_committed, outbox_rows

NOTHING = {"sent": 0, "failed": 0, "dead": 0}


def aware(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)  # SQLite returns naive UTC


async def only_row(db: Database) -> dict[str, object]:
    rows = await outbox_rows(db)
    assert len(rows) == 1
    return rows[0]


async def test_smtp_down_is_retried_with_backoff_then_delivered(
        database: Database, smtp_down: SmtpServer, clock: FakeClock) -> None:
    await enqueue_committed(database, "k1", now=clock())
    d = OutboxDispatcher(database, Settings(smtp_url=smtp_down.url), clock=clock,
                         backoff_base=2.0)

    assert await d.run_once() == {"sent": 0, "failed": 1, "dead": 0}
    row = await only_row(database)
    assert (row["state"], row["attempts"], row["claimed_until"]) == ("pending", 1, None)
    assert str(row["last_error"]).startswith(f"SMTPConnectError: Error connecting to "
                                             f"127.0.0.1 on port {smtp_down.port}")
    delay = aware(row["next_attempt_at"]) - clock()  # type: ignore[arg-type]
    assert timedelta(seconds=1) <= delay <= timedelta(seconds=2)

    # Not due yet: a pass at the same instant neither claims nor tries.
    assert await d.run_once() == NOTHING
    assert (await only_row(database))["attempts"] == 1

    clock.advance(2)
    assert await d.run_once() == {"sent": 0, "failed": 1, "dead": 0}
    row = await only_row(database)
    assert row["attempts"] == 2
    delay = aware(row["next_attempt_at"]) - clock()  # type: ignore[arg-type]
    assert timedelta(seconds=2) <= delay <= timedelta(seconds=4)  # doubled

    smtp_down.start()  # the server comes back
    clock.advance(4)
    assert await d.run_once() == {"sent": 1, "failed": 0, "dead": 0}
    row = await only_row(database)
    assert (row["state"], row["attempts"]) == ("sent", 3)
    assert [m["Message-ID"] for m in smtp_down.messages] == [
        message_id("k1", "payguard@localhost")]
    assert (d.sent_total, d.failed_total, d.dead_total) == (1, 2, 0)
    assert await d.backlog() == 0


async def test_dead_after_max_attempts(database: Database, smtp_down: SmtpServer,
                                       clock: FakeClock) -> None:
    await enqueue_committed(database, "k1", now=clock())
    d = OutboxDispatcher(database, Settings(smtp_url=smtp_down.url), clock=clock,
                         max_attempts=3, backoff_cap=10)
    results = []
    for _ in range(3):
        results.append(await d.run_once())
        clock.advance(10)
    assert results == [{"sent": 0, "failed": 1, "dead": 0}] * 2 + [
        {"sent": 0, "failed": 0, "dead": 1}]
    row = await only_row(database)
    assert (row["state"], row["attempts"], row["claimed_until"]) == ("dead", 3, None)
    assert row["last_error"]

    smtp_down.start()  # too late: dead rows are never claimed again
    clock.advance(3600)
    assert await d.run_once() == NOTHING
    assert smtp_down.messages == []
    assert await d.backlog() == 0


async def test_claim_of_a_crashed_dispatcher_lapses_and_is_taken_over(
        database: Database, smtp_server: SmtpServer, clock: FakeClock) -> None:
    await enqueue_committed(database, "k1", now=clock())
    # A dispatcher claims, then dies before sending: only the lease remains.
    async with committed(database) as uow:
        [claimed] = await claims.claim_batch(uow.conn, now=clock(), lease=timedelta(seconds=60),
                                             limit=10, max_attempts=10)
    d = OutboxDispatcher(database, Settings(smtp_url=smtp_server.url), clock=clock, lease=60)
    clock.advance(59)
    assert await d.run_once() == NOTHING  # still leased
    clock.advance(2)
    assert await d.run_once() == {"sent": 1, "failed": 0, "dead": 0}
    row = await only_row(database)
    assert (row["state"], row["attempts"]) == ("sent", 2)
    assert len(smtp_server.messages) == 1
    # The dead dispatcher, were it to wake up, can no longer touch the row.
    async with committed(database) as uow:
        assert await claims.mark_failed(uow.conn, claimed, error="late", retry_at=None) is False
    assert (await only_row(database))["state"] == "sent"


async def test_abandoned_final_attempt_goes_dead(database: Database, smtp_server: SmtpServer,
                                                 clock: FakeClock) -> None:
    await enqueue_committed(database, "k1", now=clock())
    async with committed(database) as uow:
        await claims.claim_batch(uow.conn, now=clock(), lease=timedelta(seconds=60), limit=10,
                                 max_attempts=1)
    d = OutboxDispatcher(database, Settings(smtp_url=smtp_server.url), clock=clock,
                         max_attempts=1)
    clock.advance(61)
    assert await d.run_once() == {"sent": 0, "failed": 0, "dead": 1}
    row = await only_row(database)
    assert (row["state"], row["attempts"]) == ("dead", 1)
    assert "abandoned" in str(row["last_error"])
    assert smtp_server.messages == []


class StallingTransport:
    """Delivers by SMTP, but the first delivery stalls past the lease, during which
    ``during_stall`` runs (another dispatcher taking the message over)."""

    name = "smtp"

    def __init__(self, inner: SmtpTransport, clock: FakeClock, stall: float,
                 during_stall: object) -> None:
        self.inner, self.clock, self.stall = inner, clock, stall
        self.during_stall = during_stall
        self.stalled = False

    async def deliver(self, message: ClaimedMessage) -> None:
        if not self.stalled:
            self.stalled = True
            self.clock.advance(self.stall)
            await self.during_stall()  # type: ignore[operator]
        await self.inner.deliver(message)


async def test_stale_claim_cannot_record_and_resend_keeps_message_id(
        database: Database, peer_databases: list[Database], smtp_server: SmtpServer,
        clock: FakeClock) -> None:
    await enqueue_committed(database, "k1", now=clock())
    settings = Settings(smtp_url=smtp_server.url)
    other = OutboxDispatcher(peer_databases[0], settings, clock=clock, lease=60)
    other_results = []

    async def takeover() -> None:
        other_results.append(await other.run_once())

    stalling = StallingTransport(SmtpTransport(smtp_server.url, mail_from="payguard@localhost"),
                                 clock, stall=61, during_stall=takeover)
    d = OutboxDispatcher(database, settings, transport=stalling, clock=clock, lease=60)

    assert await d.run_once() == NOTHING  # it sent, but its claim had been taken over
    assert other_results == [{"sent": 1, "failed": 0, "dead": 0}]
    assert (d.lost_claims_total, other.sent_total) == (1, 1)
    row = await only_row(database)
    assert (row["state"], row["attempts"]) == ("sent", 2)
    # The documented at-least-once edge: a send that outlived its lease is a duplicate, and
    # it carries the same Message-ID so the receiving side can drop it.
    assert [m["Message-ID"] for m in smtp_server.messages] == [
        message_id("k1", "payguard@localhost")] * 2


class ClockAdvancingTransport:
    """Each delivery takes ``seconds`` of (fake) time."""

    name = "mailbox"

    def __init__(self, clock: FakeClock, seconds: float) -> None:
        self.clock, self.seconds, self.delivered = clock, seconds, 0

    async def deliver(self, message: ClaimedMessage) -> None:
        self.clock.advance(self.seconds)
        self.delivered += 1


async def test_claims_whose_lease_cannot_cover_a_send_are_handed_back(
        database: Database, clock: FakeClock) -> None:
    for key in ("k1", "k2", "k3"):
        await enqueue_committed(database, key, now=clock())
    slow = ClockAdvancingTransport(clock, seconds=30)
    d = OutboxDispatcher(database, Settings(), transport=slow, clock=clock, lease=60,
                         send_timeout=15, concurrency=1)

    # k1 at t=0 and k2 at t=30 start with >= 15 s of lease left; k3 would start at t=60.
    assert await d.run_once() == {"sent": 2, "failed": 0, "dead": 0}
    assert (slow.delivered, d.released_total) == (2, 1)
    rows = {r["dedupe_key"]: r for r in await outbox_rows(database)}
    assert (rows["k3"]["state"], rows["k3"]["attempts"], rows["k3"]["claimed_until"]) == (
        "pending", 0, None)
    assert await d.run_once() == {"sent": 1, "failed": 0, "dead": 0}
    assert await d.backlog() == 0


async def test_a_lapsed_claim_cannot_touch_the_row_while_its_successor_sends(
        database: Database, clock: FakeClock) -> None:
    await enqueue_committed(database, "k1", now=clock())
    lease = timedelta(seconds=60)

    async def claim() -> list[ClaimedMessage]:
        async with committed(database) as uow:
            batch = await claims.claim_batch(uow.conn, now=clock(), lease=lease, limit=10,
                                             max_attempts=10)
            return batch

    [first] = await claim()
    assert await claim() == []  # leased: nobody else gets it
    clock.advance(61)
    [second] = await claim()  # the lease lapsed: taken over while `first` still runs
    assert (first.attempt, second.attempt) == (1, 2)

    async with committed(database) as uow:
        # Were these to succeed, the successor's claim would be cleared mid-send and a
        # third dispatcher could claim and send the message again.
        assert await claims.mark_failed(uow.conn, first, error="x",
                                        retry_at=clock()) is False
        assert await claims.release(uow.conn, first) is False
        assert await claims.mark_sent(uow.conn, first, now=clock()) is False
    row = await only_row(database)
    assert (row["state"], row["attempts"], row["last_error"]) == ("pending", 2, None)
    assert aware(row["claimed_until"]) == second.claimed_until  # type: ignore[arg-type]

    async with committed(database) as uow:
        assert await claims.mark_sent(uow.conn, second, now=clock()) is True
    assert (await only_row(database))["state"] == "sent"
