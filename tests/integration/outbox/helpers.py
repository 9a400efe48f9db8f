"""Small helpers shared by the outbox integration tests."""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Any

from sqlalchemy import select

from payguard.outbox import enqueue
from payguard.store.schema import outbox_messages
from payguard.store.uow import Database, UnitOfWork


async def enqueue_committed(db: Database, key: str, *, recipient: str = "ann@example.com",
                            user_id: str | None = "u1", now: datetime | None = None) -> bool:
    """Enqueue in a transaction of its own, like one fulfilment would, and commit."""
    async def fn(uow: UnitOfWork) -> bool:
        created = await enqueue(uow.conn, dedupe_key=key, kind="purchase_confirmation",
                                recipient=recipient, subject=f"Order {key}",
                                body=f"Body of {key}\n", purchase_id=f"p-{key}",
                                user_id=user_id, now=now)
        return created
    return await db.transaction(fn)


async def enqueue_raced(dbs: list[Database], key: str, times: int = 10, **kw: Any) -> list[bool]:
    """``times`` concurrent transactions, spread over ``dbs``, all enqueueing ``key``."""
    return list(await asyncio.gather(
        *(enqueue_committed(dbs[i % len(dbs)], key, **kw) for i in range(times))))


async def outbox_rows(db: Database) -> list[dict[str, Any]]:
    async with db.read() as uow:
        result = await uow.conn.execute(select(outbox_messages).order_by(outbox_messages.c.id))
        return [dict(r) for r in result.mappings().all()]
