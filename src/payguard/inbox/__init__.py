"""The webhook inbox: each provider event id is applied at most once, and never lost.

Two ways in:
- ``record_event``: claim and apply in one transaction (the row goes in as ``applied``
  together with the effects). A concurrent duplicate blocks on the key until the first
  commits, then finds it taken; if the first rolled back, the duplicate applies it.
- ``enqueue_event`` + ``mark_applied``: acknowledge fast, apply later (the service's
  webhooks, ``service.inbox_applier``). The delivery commits a ``pending`` row (holding a
  short lease for the process that received it) and is answered; an applier then runs the
  event's effects in a transaction that FIRST flips the row ``pending -> applied`` (a
  conditional update) and commits both together. A concurrent applier of the same event
  blocks on that row and then finds it applied, so the effects happen once. A failed apply
  records the error and a next attempt time and stays pending; pending rows are never
  purged.

The primary key (provider, event_id) is the dedupe guard for deliveries in both cases.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, and_, delete, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from payguard.clock import utcnow
from payguard.store import dialect
from payguard.store.schema import PRIMITIVES
from payguard.store.tables import Tables

__all__ = [
    "InboxEvent",
    "any_due",
    "claim_due",
    "enqueue_event",
    "mark_applied",
    "note_redelivery",
    "pending_count",
    "purge_older_than",
    "record_event",
    "record_failure",
    "set_outcome",
]


@dataclass(frozen=True, slots=True)
class InboxEvent:
    """A pending event as an applier sees it."""

    provider: str
    event_id: str
    type: str
    object_id: str | None
    payload: bytes
    attempts: int


def _key(tables: Tables, provider: str, event_id: str) -> ColumnElement[bool]:
    ie = tables.inbox_events
    return and_(ie.c.provider == provider, ie.c.event_id == event_id)


async def record_event(conn: AsyncConnection, *, provider: str, event_id: str, type: str,
                       object_id: str | None, outcome: str,
                       now: datetime | None = None, tables: Tables = PRIMITIVES) -> bool:
    """Claim ``event_id`` in the caller's transaction. False: it was applied before."""
    inbox_events = tables.inbox_events
    stmt = dialect.insert(conn, inbox_events).values(
        provider=provider, event_id=event_id, type=type, object_id=object_id,
        outcome=outcome, received_at=now or utcnow(),
    ).on_conflict_do_nothing(index_elements=[inbox_events.c.provider, inbox_events.c.event_id])
    result = await conn.execute(stmt)
    return result.rowcount == 1


async def note_redelivery(conn: AsyncConnection, *, provider: str, event_id: str,
                          now: datetime | None = None, tables: Tables = PRIMITIVES) -> bool:
    """Count one more delivery of an event already recorded. False: it is not recorded.

    One conditional statement both answers "seen before?" and keeps the count the
    operator sees, so a duplicate costs no more round trips than a plain lookup.
    """
    inbox_events = tables.inbox_events
    result = await conn.execute(
        update(inbox_events)
        .where(inbox_events.c.provider == provider, inbox_events.c.event_id == event_id)
        .values(deliveries=inbox_events.c.deliveries + 1, last_received_at=now or utcnow())
    )
    return result.rowcount == 1


async def enqueue_event(conn: AsyncConnection, *, provider: str, event_id: str, type: str,
                        object_id: str | None, payload: bytes, now: datetime,
                        lease: float, tables: Tables = PRIMITIVES) -> bool:
    """Store a received event as ``pending``, leased to the caller for ``lease`` seconds
    (it applies the event itself right away; others pick it up only if that lapses).
    False: the event id was received before (a duplicate delivery)."""
    ie = tables.inbox_events
    stmt = dialect.insert(conn, ie).values(
        provider=provider, event_id=event_id, type=type, object_id=object_id,
        outcome="pending", received_at=now, state="pending",
        # A verified body (JSON, so UTF-8); kept for the applier.
        payload=payload.decode("utf-8", errors="replace"), attempts=0,
        next_attempt_at=now, locked_until=now + timedelta(seconds=lease),
    ).on_conflict_do_nothing(index_elements=[ie.c.provider, ie.c.event_id])
    result = await conn.execute(stmt)
    return result.rowcount == 1


def _due(tables: Tables, now: datetime) -> ColumnElement[bool]:
    ie = tables.inbox_events
    return and_(ie.c.state == "pending",
                or_(ie.c.next_attempt_at.is_(None), ie.c.next_attempt_at <= now),
                or_(ie.c.locked_until.is_(None), ie.c.locked_until < now))


async def any_due(conn: AsyncConnection, *, now: datetime,
                  tables: Tables = PRIMITIVES) -> bool:
    """Is any pending event due and unleased? (A read, for idle sweeps.)"""
    ie = tables.inbox_events
    found = await conn.scalar(select(ie.c.event_id).where(_due(tables, now)).limit(1))
    return found is not None


async def claim_due(conn: AsyncConnection, *, now: datetime, lease: float, limit: int,
                    tables: Tables = PRIMITIVES) -> list[InboxEvent]:
    """Lease up to ``limit`` pending events that are due and not leased by anyone else.
    Each lease is a conditional update, so two appliers never lease the same row at once
    (and if they did, ``mark_applied`` would still let only one apply it)."""
    ie = tables.inbox_events
    rows = (await conn.execute(
        select(ie.c.provider, ie.c.event_id).where(_due(tables, now))
        .order_by(ie.c.next_attempt_at).limit(limit)
    )).all()
    claimed: list[InboxEvent] = []
    until = now + timedelta(seconds=lease)
    for row in rows:
        got = (await conn.execute(
            update(ie)
            .where(_key(tables, row.provider, row.event_id), ie.c.state == "pending",
                   or_(ie.c.locked_until.is_(None), ie.c.locked_until < now))
            .values(locked_until=until)
            .returning(ie.c.type, ie.c.object_id, ie.c.payload, ie.c.attempts)
        )).first()
        if got is not None:
            claimed.append(InboxEvent(row.provider, row.event_id, got.type, got.object_id,
                                      (got.payload or "").encode(), int(got.attempts)))
    return claimed


async def mark_applied(conn: AsyncConnection, provider: str, event_id: str, *,
                       outcome: str, tables: Tables = PRIMITIVES) -> bool:
    """First statement of an apply transaction: ``pending -> applied``. False: someone
    applied it already (the caller must do nothing)."""
    ie = tables.inbox_events
    result = await conn.execute(
        update(ie).where(_key(tables, provider, event_id), ie.c.state == "pending")
        .values(state="applied", outcome=outcome, locked_until=None, last_error=None)
    )
    return result.rowcount == 1


async def set_outcome(conn: AsyncConnection, provider: str, event_id: str, outcome: str, *,
                      tables: Tables = PRIMITIVES) -> None:
    await conn.execute(update(tables.inbox_events)
                       .where(_key(tables, provider, event_id)).values(outcome=outcome))


async def record_failure(conn: AsyncConnection, provider: str, event_id: str, *,
                         error: str, retry_at: datetime,
                         tables: Tables = PRIMITIVES) -> None:
    """The apply failed: count it, keep the error, release the lease, retry at ``retry_at``."""
    ie = tables.inbox_events
    await conn.execute(
        update(ie).where(_key(tables, provider, event_id), ie.c.state == "pending")
        .values(attempts=ie.c.attempts + 1, last_error=error[:2000],
                next_attempt_at=retry_at, locked_until=None)
    )


async def pending_count(conn: AsyncConnection, *, tables: Tables = PRIMITIVES) -> int:
    ie = tables.inbox_events
    return int(await conn.scalar(select(func.count()).select_from(ie)
                                 .where(ie.c.state == "pending")) or 0)


async def purge_older_than(conn: AsyncConnection, age: timedelta,
                           now: datetime | None = None, *, tables: Tables = PRIMITIVES) -> int:
    """Forget events received more than ``age`` ago; returns how many went. Pending
    events (acknowledged, not applied yet) stay until they are applied."""
    inbox_events = tables.inbox_events
    cutoff = (now or utcnow()) - age
    result = await conn.execute(delete(inbox_events).where(
        inbox_events.c.received_at < cutoff, inbox_events.c.state != "pending"))
    return int(result.rowcount)
