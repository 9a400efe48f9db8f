"""What is still in flight: the state a quiet service converges to after crashes.

After the last request and the last fault, a healthy cluster reaches: no idempotency key in
progress, no lease held, no pending checkout without its recorded provider session. Anything
left is work a dead holder abandoned and nobody resumed (or the reconciler has yet to
finish). ``payguard race`` waits for this state before it checks the final numbers.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select

from payguard.clock import utcnow
from payguard.holders import holder_alive
from payguard.service.context import AppContext
from payguard.service.reconcile import RECONCILE_LOCK
from payguard.states import PurchaseStatus
from payguard.store.schema import holders, idempotency_keys, purchases

__all__ = ["in_flight"]


async def in_flight(ctx: AppContext) -> dict[str, Any]:
    now = utcnow()
    lease = ctx.settings.holder_lease
    async with ctx.db.read() as uow:
        conn = uow.conn
        keys = await conn.scalar(select(func.count()).select_from(idempotency_keys).where(
            idempotency_keys.c.state == "in_progress"))
        orphaned = await conn.scalar(select(func.count()).select_from(idempotency_keys).where(
            idempotency_keys.c.state == "in_progress",
            ~holder_alive(idempotency_keys.c.holder_id, now, lease)))
        unrecorded = await conn.scalar(select(func.count()).select_from(purchases).where(
            purchases.c.status == PurchaseStatus.PENDING, purchases.c.payment_method == "card",
            purchases.c.provider_session_id.is_(None)))
        live = await conn.scalar(select(func.count()).select_from(holders).where(
            holder_alive(holders.c.id, now, lease)))
    stats = await ctx.locks.stats()
    # The reconciler's own lease is maintenance, not a request's work in flight.
    held = [h["key"] for h in stats["held"] if h["key"] != RECONCILE_LOCK]
    return {
        "keys_in_progress": int(keys or 0),
        "keys_of_dead_holders": int(orphaned or 0),
        "checkouts_without_session": int(unrecorded or 0),
        "locks_held": len(held),
        "locks": held[:20],
        "lock_backend_health": stats["health"],
        "live_holders": int(live or 0),
        "quiet": not keys and not unrecorded and not held and stats["health"] == "ok",
    }
