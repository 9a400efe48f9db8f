"""The outbox as the operator sees it (pending, sent, dead) and the retry of a dead email."""

from __future__ import annotations

from typing import Any, Literal

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from payguard.clock import utcnow
from payguard.errors import InvalidState, NotFound
from payguard.outbox.claims import requeue_dead
from payguard.service.admin_purchases import email_view
from payguard.service.context import AppContext
from payguard.store.schema import outbox_messages as om
from payguard.store.uow import UnitOfWork

__all__ = ["OutboxState", "list_messages", "retry_message"]

OutboxState = Literal["pending", "sent", "dead", "retrying"]


async def list_messages(conn: AsyncConnection, *, state: OutboxState | None, limit: int,
                        cursor: int | None) -> dict[str, Any]:
    """Newest first by id; ``retrying``: pending messages that failed at least once."""
    query = select(om)
    if state == "retrying":
        query = query.where(om.c.state == "pending", om.c.last_error.is_not(None))
    elif state is not None:
        query = query.where(om.c.state == state)
    if cursor is not None:
        query = query.where(om.c.id < cursor)
    rows = (await conn.execute(query.order_by(om.c.id.desc()).limit(limit + 1))).all()
    page = rows[:limit]
    counts = {"pending": 0, "sent": 0, "dead": 0}
    for row in await conn.execute(select(om.c.state, func.count()).group_by(om.c.state)):
        counts[str(row[0])] = int(row[1])
    counts["retrying"] = int(await conn.scalar(
        select(func.count()).select_from(om)
        .where(om.c.state == "pending", om.c.last_error.is_not(None))) or 0)
    return {
        "messages": [email_view(r) for r in page],
        "next_cursor": str(page[-1].id) if len(rows) > limit else None,
        "counts": counts,
    }


async def retry_message(uow: UnitOfWork, ctx: AppContext, message_id: int) -> dict[str, Any]:
    """Requeue a dead message (in the caller's transaction) and wake the dispatcher after
    the commit. Only ``dead`` messages: else ``409 INVALID_STATE``."""
    conn = uow.conn
    if not await requeue_dead(conn, message_id, now=utcnow()):
        state = await conn.scalar(select(om.c.state).where(om.c.id == message_id))
        if state is None:
            raise NotFound(f"no outbox message {message_id}")
        raise InvalidState(f"message is {state}; only dead messages can be retried")
    if ctx.outbox is not None:
        uow.after_commit(ctx.outbox.wake)
    row = (await conn.execute(select(om).where(om.c.id == message_id))).one()
    return email_view(row)
