"""The inbox applier on SQLite and PostgreSQL: acknowledged events apply exactly once, however
many appliers race for them; a failed apply stays pending (counted, with its error) until a
retry succeeds; a leased event waits for its lease; pending events are never purged."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

from sqlalchemy import select

from payguard import inbox
from payguard.clock import utcnow
from payguard.inbox import InboxEvent
from payguard.service.inbox_applier import Application, InboxApplier
from payguard.store.schema import inbox_events
from payguard.store.uow import Database, UnitOfWork
from payguard.telemetry import MetricsSink


class Seen(MetricsSink):
    def __init__(self) -> None:
        self.outcomes: list[str] = []

    def webhook_event(self, event_type: str, outcome: str) -> None:
        self.outcomes.append(outcome)


async def enqueue(db: Database, event_id: str, *, lease: float = 30.0) -> InboxEvent:
    async def tx(uow: UnitOfWork) -> bool:
        return await inbox.enqueue_event(uow.conn, provider="test", event_id=event_id,
                                         type="thing.happened", object_id="obj_1",
                                         payload=b'{"n": 1}', now=utcnow(), lease=lease)

    assert await db.transaction(tx)
    assert not await db.transaction(tx)  # a duplicate delivery is refused by the key
    return InboxEvent("test", event_id, "thing.happened", "obj_1", b'{"n": 1}', 0)


async def row(db: Database, event_id: str) -> dict[str, Any]:
    async with db.read() as uow:
        found = (await uow.conn.execute(select(inbox_events).where(
            inbox_events.c.event_id == event_id))).one()
    return dict(found._mapping)


async def pending(db: Database) -> int:
    async with db.read() as uow:
        return await inbox.pending_count(uow.conn)


async def test_racing_appliers_apply_an_event_exactly_once(database: Database) -> None:
    event = await enqueue(database, "evt_race")
    committed: list[str] = []

    async def prepare(_event: InboxEvent) -> Application:
        await asyncio.sleep(0)  # let the racers interleave

        async def effects(uow: UnitOfWork) -> str:
            uow.after_commit(lambda: committed.append("effects"))
            return "done"

        return Application("pending", effects)

    appliers = [InboxApplier(database) for _ in range(4)]
    for applier in appliers:
        applier.register("test", prepare)
    outcomes = await asyncio.gather(*(a.apply(event) for a in appliers for _ in range(4)))
    assert sorted(o for o in outcomes if o is not None) == ["done"]
    assert outcomes.count(None) == 15
    assert committed == ["effects"]
    assert sum(a.applied for a in appliers) == 1 and sum(a.failed for a in appliers) == 0
    stored = await row(database, "evt_race")
    assert (stored["state"], stored["outcome"], stored["locked_until"]) == (
        "applied", "done", None)
    # Applied events are never leased again.
    assert await database.transaction(lambda uow: inbox.claim_due(
        uow.conn, now=utcnow() + timedelta(hours=1), lease=30, limit=10)) == []


async def test_a_failed_apply_stays_pending_and_a_later_poll_applies_it(
    database: Database,
) -> None:
    await enqueue(database, "evt_flaky", lease=0.0)
    failures = 2
    applied: list[str] = []

    async def prepare(event: InboxEvent) -> Application:
        nonlocal failures
        if failures:
            failures -= 1
            raise ConnectionError("provider unreachable")

        async def effects(uow: UnitOfWork) -> str:
            uow.after_commit(lambda: applied.append(event.event_id))
            return "done"

        return Application("pending", effects)

    seen = Seen()
    applier = InboxApplier(database, retry_cap=0.01, metrics=seen)
    applier.register("test", prepare)
    assert await pending(database) == 1 and await applier.pending() == 1

    assert await applier.poll() == 1  # attempt 1 fails
    stored = await row(database, "evt_flaky")
    assert (stored["state"], stored["attempts"]) == ("pending", 1)
    assert "provider unreachable" in str(stored["last_error"])
    await asyncio.sleep(0.05)  # past the (capped) backoff
    assert await applier.poll() == 1  # attempt 2 fails
    await asyncio.sleep(0.05)
    assert await applier.poll() == 1  # attempt 3 applies
    assert await applier.poll() == 0
    assert applied == ["evt_flaky"]
    assert seen.outcomes == ["apply_failed", "apply_failed", "done"]
    assert (applier.failed, applier.applied) == (2, 1)
    stored = await row(database, "evt_flaky")
    assert (stored["state"], stored["attempts"], stored["last_error"]) == ("applied", 2, None)
    assert await pending(database) == 0


async def test_effects_that_fail_roll_back_the_flip(database: Database) -> None:
    """The flip and the effects commit together: effects that raise leave the event
    pending (nothing of them committed), and the next attempt applies it once."""
    event = await enqueue(database, "evt_effects", lease=0.0)
    calls = 0

    async def prepare(_event: InboxEvent) -> Application:
        async def effects(uow: UnitOfWork) -> str:
            nonlocal calls
            calls += 1
            await uow.conn.execute(inbox_events.update().where(
                inbox_events.c.event_id == "evt_effects").values(type="changed"))
            if calls == 1:
                raise RuntimeError("the purchase row said no")
            return "done"

        return Application("pending", effects)

    applier = InboxApplier(database, retry_cap=0.01)
    applier.register("test", prepare)
    assert await applier.apply(event) is None
    stored = await row(database, "evt_effects")
    assert (stored["state"], stored["type"], stored["attempts"]) == (
        "pending", "thing.happened", 1)
    await asyncio.sleep(0.05)
    assert await applier.poll() == 1
    stored = await row(database, "evt_effects")
    assert (stored["state"], stored["outcome"], stored["type"]) == ("applied", "done",
                                                                   "changed")
    assert calls == 2


async def test_a_leased_event_waits_for_its_lease_and_pending_ones_are_never_purged(
    database: Database,
) -> None:
    await enqueue(database, "evt_leased", lease=30.0)
    now = utcnow()

    async def check(uow: UnitOfWork) -> None:
        # The receiving process holds the lease: nobody else takes the event...
        assert await inbox.claim_due(uow.conn, now=now, lease=30, limit=10) == []
        # ...until it lapses (that process died).
        later = await inbox.claim_due(uow.conn, now=now + timedelta(seconds=31), lease=30,
                                      limit=10)
        assert [e.event_id for e in later] == ["evt_leased"]
        assert await inbox.purge_older_than(uow.conn, timedelta(0),
                                            now + timedelta(days=90)) == 0

    await database.transaction(check)
