"""Writing to and reading from the outbox table, inside the caller's open transaction.

``enqueue`` is called in the same transaction that fulfils a purchase: the email exists if
and only if the purchase committed. ``dedupe_key`` is UNIQUE, so however many webhook
deliveries or reconcilers fulfil the same purchase concurrently, one row survives; the
others' ``INSERT ... ON CONFLICT DO NOTHING`` is a no-op (on PostgreSQL it waits for the
first inserter to commit or roll back, then decides). Delivery state lives in other
columns of that row and never touches the key, so a retry can't re-open the dedupe.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from payguard.clock import isoformat, utcnow
from payguard.store.schema import PRIMITIVES
from payguard.store.tables import Tables

__all__ = ["MAX_DEDUPE_KEY", "count_pending", "enqueue", "list_mailbox"]

MAX_DEDUPE_KEY = 200  # the column's length; SQLite would not enforce it, so we do


def _check_header(name: str, value: str) -> None:
    # A CR/LF would inject SMTP headers; refuse it here rather than let it die in the queue.
    if "\r" in value or "\n" in value:
        raise ValueError(f"{name} must not contain line breaks")


async def enqueue(conn: AsyncConnection, *, dedupe_key: str, kind: str, recipient: str,
                  subject: str, body: str, purchase_id: str | None = None,
                  user_id: str | None = None, now: datetime | None = None,
                  tables: Tables = PRIMITIVES) -> bool:
    """Queue one message in the open transaction; never commits.

    Returns True if the row was inserted, False if ``dedupe_key`` already existed.
    """
    if not dedupe_key or len(dedupe_key) > MAX_DEDUPE_KEY:
        raise ValueError(f"dedupe_key must be 1..{MAX_DEDUPE_KEY} characters")
    if not recipient or "@" not in recipient:
        raise ValueError("recipient must be an email address")
    _check_header("recipient", recipient)
    _check_header("subject", subject)
    now = now or utcnow()
    values: dict[str, Any] = {
        "dedupe_key": dedupe_key, "kind": kind, "recipient": recipient, "subject": subject,
        "body": body, "purchase_id": purchase_id, "user_id": user_id, "state": "pending",
        "attempts": 0, "next_attempt_at": now, "created_at": now,
    }
    om = tables.outbox_messages
    insert = postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
    stmt = (insert(om).values(**values)
            .on_conflict_do_nothing(index_elements=[om.c.dedupe_key])
            .returning(om.c.id))
    return (await conn.execute(stmt)).first() is not None


async def count_pending(conn: AsyncConnection, *, tables: Tables = PRIMITIVES) -> int:
    """Messages not yet delivered nor given up on (including ones waiting for a retry)."""
    om = tables.outbox_messages
    stmt = select(func.count()).select_from(om).where(om.c.state == "pending")
    return int((await conn.execute(stmt)).scalar_one())


async def list_mailbox(conn: AsyncConnection, *, user_id: str | None = None,
                       limit: int = 50, tables: Tables = PRIMITIVES) -> list[dict[str, Any]]:
    """Delivered messages, newest first, optionally only ``user_id``'s.

    In mailbox mode (no SMTP configured) marking a row ``sent`` is the delivery, so this
    is the inbox; messages that went out by SMTP are not listed.
    """
    if not 1 <= limit <= 500:
        raise ValueError("limit must be 1..500")
    om = tables.outbox_messages
    stmt = select(om.c.id, om.c.dedupe_key, om.c.kind, om.c.recipient, om.c.subject,
                  om.c.body, om.c.purchase_id, om.c.user_id, om.c.created_at,
                  om.c.sent_at).where(om.c.state == "sent",
                                         om.c.transport == "mailbox")
    if user_id is not None:
        stmt = stmt.where(om.c.user_id == user_id)
    stmt = stmt.order_by(om.c.sent_at.desc(), om.c.id.desc()).limit(limit)
    rows = (await conn.execute(stmt)).mappings().all()
    return [{**row, "id": str(row["id"]), "created_at": isoformat(row["created_at"]),
             "sent_at": isoformat(row["sent_at"])} for row in rows]
