"""The webhook inbox: each provider event id is applied at most once.

The inbox row is inserted in the same transaction as the event's effects. Its primary key
(provider, event_id) is the dedupe guard: a concurrent duplicate blocks on the key until the
first commits, then finds it taken; if the first rolled back, the duplicate applies it.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import delete, update
from sqlalchemy.ext.asyncio import AsyncConnection

from payguard.clock import utcnow
from payguard.store import dialect
from payguard.store.schema import PRIMITIVES
from payguard.store.tables import Tables

__all__ = ["note_redelivery", "purge_older_than", "record_event"]


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


async def purge_older_than(conn: AsyncConnection, age: timedelta,
                           now: datetime | None = None, *, tables: Tables = PRIMITIVES) -> int:
    """Forget events received more than ``age`` ago; returns how many went."""
    inbox_events = tables.inbox_events
    cutoff = (now or utcnow()) - age
    result = await conn.execute(delete(inbox_events).where(inbox_events.c.received_at < cutoff))
    return int(result.rowcount)
