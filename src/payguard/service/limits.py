"""Per-user limits on what a user can hold without paying: pending card checkouts, stock
items held by them, pending top-ups. Checked in the reserving transaction after the user's
row is locked, so concurrent checkouts of one user (for different items, which the
per-item checkout lock does not serialize) cannot together pass a limit."""

from __future__ import annotations

import math
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from payguard.clock import as_utc
from payguard.config import Settings
from payguard.errors import LimitReached
from payguard.states import PurchaseStatus
from payguard.store.schema import purchases, users

__all__ = ["check_checkout_limits"]


async def check_checkout_limits(conn: AsyncConnection, settings: Settings, user_id: str, *,
                                kind: str, quantity: int, now: datetime) -> None:
    """``LimitReached`` (429, ``Retry-After``: until the oldest pending checkout expires)
    when this checkout would pass one of the user's limits."""
    # Serializes this user's reservations on PostgreSQL (SQLite's BEGIN IMMEDIATE already
    # does). The user's row comes before any shared row, as everywhere in payguard.
    await conn.execute(select(users.c.id).where(users.c.id == user_id).with_for_update())
    rows = (await conn.execute(
        select(purchases.c.kind, func.count(), func.coalesce(func.sum(purchases.c.quantity), 0),
               func.min(purchases.c.expires_at))
        .where(purchases.c.user_id == user_id, purchases.c.status == PurchaseStatus.PENDING,
               purchases.c.payment_method == "card")
        .group_by(purchases.c.kind))).all()
    by_kind: dict[str, Any] = {row[0]: row for row in rows}
    pending = sum(int(row[1]) for row in rows)
    expiries = [as_utc(row[3]) for row in rows if row[3] is not None]
    retry = max(1, math.ceil((min(expiries) - now).total_seconds())) if expiries else 60
    if pending >= settings.max_pending_checkouts:
        raise LimitReached(f"you have {pending} card checkouts pending (the limit is "
                           f"{settings.max_pending_checkouts}): pay or cancel one",
                           retry_after=retry)
    if kind == "topup" and "topup" in by_kind and \
            int(by_kind["topup"][1]) >= settings.max_pending_topups:
        raise LimitReached(f"you have {int(by_kind['topup'][1])} top-ups pending (the limit "
                           f"is {settings.max_pending_topups})", retry_after=retry)
    held = int(by_kind["product"][2]) if "product" in by_kind else 0
    if kind == "product" and held + quantity > settings.max_held_items:
        raise LimitReached(f"your pending checkouts hold {held} items; {quantity} more would "
                           f"pass the limit of {settings.max_held_items}", retry_after=retry)
