"""Claiming, completing and failing outbox rows: each a single conditional statement.

A claim sets ``claimed_until`` (the lease) and increments ``attempts`` in one UPDATE whose
WHERE clause only matches unclaimed (or expired) pending rows, so two dispatchers can never
both claim a row: on SQLite writers are serialised (``BEGIN IMMEDIATE``); on PostgreSQL the
candidate rows are locked with ``FOR UPDATE SKIP LOCKED`` and the outer UPDATE re-checks the
condition. The incremented ``attempts`` is the fencing token: completing or failing a row
is conditioned on ``attempts`` still being the value our claim set, so a dispatcher that
stalled past its lease can't overwrite the outcome of the one that took over.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import Table, and_, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql.elements import ColumnElement

from payguard.outbox.types import ClaimedMessage
from payguard.store.schema import PRIMITIVES
from payguard.store.tables import Tables

__all__ = ["claim_batch", "mark_failed", "mark_sent", "reap_abandoned", "release", "requeue_dead"]

MAX_ERROR_CHARS = 2000


def _unclaimed(om: Table, now: datetime) -> ColumnElement[bool]:
    return and_(om.c.state == "pending",
                or_(om.c.claimed_until.is_(None), om.c.claimed_until < now))


async def claim_batch(conn: AsyncConnection, *, now: datetime, lease: timedelta, limit: int,
                      max_attempts: int, tables: Tables = PRIMITIVES) -> list[ClaimedMessage]:
    """Claim up to ``limit`` due messages, oldest due first, for ``lease``."""
    om = tables.outbox_messages
    eligible = and_(_unclaimed(om, now), om.c.next_attempt_at <= now,
                    om.c.attempts < max_attempts)
    candidates = (select(om.c.id).where(eligible)
                  .order_by(om.c.next_attempt_at, om.c.id).limit(limit))
    if conn.dialect.name == "postgresql":
        candidates = candidates.with_for_update(skip_locked=True)
    until = now + lease
    stmt = (update(om).where(om.c.id.in_(candidates), eligible)
            .values(claimed_until=until, attempts=om.c.attempts + 1)
            .returning(om.c.id, om.c.dedupe_key, om.c.kind, om.c.recipient, om.c.subject,
                       om.c.body, om.c.created_at, om.c.attempts))
    rows = (await conn.execute(stmt)).mappings().all()
    claimed = [ClaimedMessage(id=r["id"], dedupe_key=r["dedupe_key"], kind=r["kind"],
                              recipient=r["recipient"], subject=r["subject"], body=r["body"],
                              created_at=r["created_at"], attempt=r["attempts"],
                              claimed_until=until) for r in rows]
    # RETURNING order is unspecified; send in due order for fairness.
    return sorted(claimed, key=lambda m: m.id)


def _held(om: Table, msg: ClaimedMessage) -> ColumnElement[bool]:
    return and_(om.c.id == msg.id, om.c.state == "pending", om.c.attempts == msg.attempt)


async def mark_sent(conn: AsyncConnection, msg: ClaimedMessage, *, now: datetime,
                    transport: str | None = None, tables: Tables = PRIMITIVES) -> bool:
    """Record delivery; False if our claim was taken over (then the other claim decides)."""
    om = tables.outbox_messages
    stmt = update(om).where(_held(om, msg)).values(state="sent", sent_at=now, claimed_until=None,
                                               transport=transport)
    return (await conn.execute(stmt)).rowcount == 1


async def mark_failed(conn: AsyncConnection, msg: ClaimedMessage, *, error: str,
                      retry_at: datetime | None, tables: Tables = PRIMITIVES) -> bool:
    """Record a failed attempt: retry at ``retry_at``, or ``dead`` when it is None."""
    om = tables.outbox_messages
    values: dict[str, object] = {"claimed_until": None, "last_error": error[:MAX_ERROR_CHARS]}
    if retry_at is None:
        values["state"] = "dead"
    else:
        values["next_attempt_at"] = retry_at
    stmt = update(om).where(_held(om, msg)).values(**values)
    return (await conn.execute(stmt)).rowcount == 1


async def release(conn: AsyncConnection, msg: ClaimedMessage, *,
                  tables: Tables = PRIMITIVES) -> bool:
    """Give back a claim that was never tried (no attempt made, so none is counted)."""
    om = tables.outbox_messages
    stmt = (update(om).where(_held(om, msg))
            .values(claimed_until=None, attempts=om.c.attempts - 1))
    return (await conn.execute(stmt)).rowcount == 1


async def reap_abandoned(conn: AsyncConnection, *, now: datetime, max_attempts: int,
                         tables: Tables = PRIMITIVES) -> int:
    """Mark dead the rows whose last allowed attempt was claimed and never finished.

    That happens when a dispatcher dies (or stalls past its lease) mid-send on the final
    attempt; without this the row would stay ``pending`` forever, never claimable again.
    """
    om = tables.outbox_messages
    stmt = (update(om).where(_unclaimed(om, now), om.c.attempts >= max_attempts)
            .values(state="dead", claimed_until=None,
                    last_error="the last allowed attempt was abandoned "
                               "(dispatcher stopped or stalled past its lease)"))
    return (await conn.execute(stmt)).rowcount


async def requeue_dead(conn: AsyncConnection, message_id: int, *, now: datetime,
                       tables: Tables = PRIMITIVES) -> bool:
    """An operator's retry: a ``dead`` message becomes due now with a fresh attempt budget.

    Conditional on ``state = 'dead'``, so two concurrent retries requeue it once and a
    pending or sent message is never touched. ``last_error`` is kept for the record.
    """
    om = tables.outbox_messages
    stmt = (update(om).where(om.c.id == message_id, om.c.state == "dead")
            .values(state="pending", attempts=0, next_attempt_at=now, claimed_until=None))
    return (await conn.execute(stmt)).rowcount == 1
