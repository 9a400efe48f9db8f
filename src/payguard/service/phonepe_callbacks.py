"""PhonePe's server-to-server callbacks: checked, deduplicated, and treated as a nudge.

PhonePe authenticates a callback by ``Authorization: sha256(username:password)``, not by a
signature over the body, so the body is never trusted: it only says *which* merchant order
(our purchase id) changed. The order's status is fetched from PhonePe before anything is
applied, and the effect goes through the same inbox claim and the same ``fulfil`` /
``close_pending_in`` as Stripe's webhooks, in one transaction: whatever the number, order
and concurrency of deliveries, an order is completed (or failed) once.

PhonePe callbacks carry no event id. The inbox key is ``{type}:{PhonePe order or refund
id}``: an order reaches each final state once, so duplicates share the key.
"""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy import select

from payguard.clock import utcnow
from payguard.inbox import note_redelivery, record_event
from payguard.service.context import AppContext
from payguard.service.lifecycle import close_pending_in, fulfil_in, send_pending_refund
from payguard.service.redelivery import already_applied
from payguard.store.schema import inbox_events, purchases
from payguard.store.uow import UnitOfWork

__all__ = ["ORDER_CALLBACKS", "handle_phonepe_callback"]

log = logging.getLogger("payguard.phonepe")

PROVIDER = "phonepe"
ORDER_CALLBACKS = frozenset({"PG_ORDER_COMPLETED", "PG_ORDER_FAILED",
                             "CHECKOUT_ORDER_COMPLETED", "CHECKOUT_ORDER_FAILED"})


def _event_id(kind: str, payload: dict[str, Any]) -> str:
    ref = (payload.get("refundId") or payload.get("merchantRefundId")
           or payload.get("orderId") or payload.get("merchantOrderId") or "")
    return f"{kind}:{ref}"[:255]


async def _find_purchase(ctx: AppContext, merchant_order_id: str) -> str | None:
    """Our purchase for a merchant order id (they are the same id, see the adapter)."""
    async with ctx.db.read() as uow:
        found = await uow.conn.scalar(select(purchases.c.id).where(
            purchases.c.id == merchant_order_id, purchases.c.payment_method == "card"))
    return str(found) if found is not None else None


async def handle_phonepe_callback(ctx: AppContext, payload: bytes,
                                  authorization: str | None) -> dict[str, Any]:
    callback = ctx.provider.construct_event(payload, authorization)  # 400 when wrong
    kind = str(callback.get("type") or "")
    data = callback.get("payload") or {}
    event_id = _event_id(kind, data)
    merchant_order_id = str(data.get("merchantOrderId") or data.get(
        "originalMerchantOrderId") or "")

    if await already_applied(ctx.db, PROVIDER, event_id):
        ctx.metrics.webhook_event(kind, "duplicate")
        return {"received": True, "duplicate": True}

    purchase_id = None
    if kind in ORDER_CALLBACKS and merchant_order_id:
        purchase_id = await _find_purchase(ctx, merchant_order_id)
    session = None
    if purchase_id is not None:
        # The nudge: PhonePe's answer, not the callback body, decides. Unreachable -> 503
        # and nothing recorded, so PhonePe (or the poller) tries again.
        session = await ctx.provider.retrieve_checkout_session(merchant_order_id)

    async def apply(uow: UnitOfWork) -> tuple[bool, str]:
        if kind not in ORDER_CALLBACKS:
            outcome = "ignored"  # refunds: booked when we asked for them
        elif purchase_id is None or session is None:
            outcome = "unknown_order"
        elif session.is_paid:
            outcome = "pending"
        elif session.failed:
            outcome = "failed"
        elif session.status == "expired":
            outcome = "expired"
        else:
            outcome = "awaiting_payment"  # the status says PENDING: the poller follows up
        if not await record_event(uow.conn, provider=PROVIDER, event_id=event_id, type=kind,
                                  object_id=merchant_order_id or None, outcome=outcome,
                                  now=utcnow()):
            await note_redelivery(uow.conn, provider=PROVIDER, event_id=event_id)
            return True, "duplicate"
        if outcome == "pending":
            assert purchase_id is not None and session is not None
            outcome = await fulfil_in(uow, ctx, purchase_id, session)
        elif outcome in ("failed", "expired"):
            assert purchase_id is not None
            error = session.metadata.get("phonepe_error", "FAILED") if session else "FAILED"
            reason = (f"PhonePe order failed ({error})" if outcome == "failed"
                      else "checkout expired")
            if await close_pending_in(uow.conn, purchase_id, outcome, reason=reason) is None:
                outcome = "already_closed"
        if outcome not in ("pending", "failed", "expired", "ignored", "unknown_order"):
            await uow.conn.execute(inbox_events.update().where(
                inbox_events.c.provider == PROVIDER, inbox_events.c.event_id == event_id
            ).values(outcome=outcome))
        return False, outcome

    duplicate, outcome = await ctx.db.transaction(apply)
    ctx.metrics.webhook_event(kind, "duplicate" if duplicate else outcome)
    if outcome == "refund" and purchase_id is not None:
        await send_pending_refund(ctx, purchase_id)
    log.info("phonepe callback %s -> %s", event_id, outcome)
    return {"received": True, "duplicate": duplicate}
