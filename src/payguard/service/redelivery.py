"""The first dedupe check of a webhook or callback delivery, shared by every provider.

A plain read answers "applied before?"; only when it was is one more delivery counted on
the inbox row (the operator's duplicate count), so a first delivery takes no write lock
here. The inbox insert in the effects' transaction stays the guard for racing deliveries,
which count themselves there (``note_redelivery`` after a refused insert).
"""

from __future__ import annotations

from sqlalchemy import select

from payguard.inbox import note_redelivery
from payguard.store.schema import inbox_events
from payguard.store.uow import Database

__all__ = ["already_applied"]


async def already_applied(db: Database, provider: str, event_id: str) -> bool:
    async with db.read() as uow:
        found = await uow.conn.scalar(select(inbox_events.c.event_id).where(
            inbox_events.c.provider == provider, inbox_events.c.event_id == event_id))
    if found is None:
        return False

    await db.transaction(
        lambda uow: note_redelivery(uow.conn, provider=provider, event_id=event_id))
    return True
