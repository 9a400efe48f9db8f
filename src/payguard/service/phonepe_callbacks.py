"""PhonePe's server-to-server callbacks: checked, deduplicated, and treated as a nudge.

PhonePe authenticates a callback by ``Authorization: sha256(username:password)``, not by a
signature over the body, so the body is never trusted: it only says *which* merchant order
(our purchase id) changed. Like Stripe's webhooks, a callback is answered once it is
durably in the inbox (``pending``) and applied from there by the inbox applier
(``phonepe_preparer``): the order's status is fetched from PhonePe, then the same
``fulfil`` / ``close_pending_in`` run in the transaction that flips the inbox row to
``applied``: whatever the number, order and concurrency of deliveries, an order is
completed (or failed) once, and a failed apply stays pending for a retry.

PhonePe callbacks carry no event id. The inbox key is ``{type}:{PhonePe order or refund
id}``: an order reaches each final state once, so duplicates share the key.
"""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy import select

from payguard import inbox
from payguard.clock import utcnow
from payguard.inbox import InboxEvent, note_redelivery
from payguard.service.context import AppContext
from payguard.service.inbox_applier import Application, Prepare
from payguard.service.lifecycle import (
    REFUND_OUTCOMES,
    close_pending_in,
    fulfil_in,
    send_pending_refund,
)
from payguard.service.redelivery import already_applied
from payguard.states import PurchaseStatus
from payguard.store.schema import purchases
from payguard.store.uow import UnitOfWork

__all__ = ["ORDER_CALLBACKS", "PROVIDER", "handle_phonepe_callback", "phonepe_preparer"]

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
    """Check, record durably, answer. The callback is applied afterwards from the inbox."""
    callback = ctx.provider.construct_event(payload, authorization)  # 400 when wrong
    kind = str(callback.get("type") or "")
    data = callback.get("payload") or {}
    event_id = _event_id(kind, data)
    merchant_order_id = str(data.get("merchantOrderId") or data.get(
        "originalMerchantOrderId") or "")

    if await already_applied(ctx.db, PROVIDER, event_id):
        ctx.metrics.webhook_event(kind, "duplicate")
        return {"received": True, "duplicate": True}

    # Refund callbacks: booked when we asked for them; an order callback without an
    # order: nothing to apply. Both are recorded as final at once.
    final = None if kind in ORDER_CALLBACKS and merchant_order_id else (
        "unknown_order" if kind in ORDER_CALLBACKS else "ignored")
    now = utcnow()

    async def record(uow: UnitOfWork) -> bool:
        if final is None:
            new = await inbox.enqueue_event(
                uow.conn, provider=PROVIDER, event_id=event_id, type=kind,
                object_id=merchant_order_id, payload=payload, now=now,
                lease=ctx.inbox.lease)
        else:
            new = await inbox.record_event(
                uow.conn, provider=PROVIDER, event_id=event_id, type=kind,
                object_id=merchant_order_id or None, outcome=final, now=now)
        if not new:  # a concurrent delivery of the same callback won the insert
            await note_redelivery(uow.conn, provider=PROVIDER, event_id=event_id)
        return new

    new = await ctx.db.transaction(record)
    if not new:
        ctx.metrics.webhook_event(kind, "duplicate")
    elif final is not None:
        ctx.metrics.webhook_event(kind, final)
    else:  # counted with its outcome once applied
        ctx.inbox.submit(InboxEvent(PROVIDER, event_id, kind, merchant_order_id, payload,
                                    attempts=0))
    return {"received": True, "duplicate": not new}


def phonepe_preparer(ctx: AppContext) -> Prepare:
    """How a pending PhonePe order callback is applied (registered with the applier)."""

    async def prepare(event: InboxEvent) -> Application:
        merchant_order_id = event.object_id or ""
        purchase_id = await _find_purchase(ctx, merchant_order_id)
        if purchase_id is None:
            return Application("unknown_order")
        # The nudge: PhonePe's answer, not the callback body, decides. Unreachable: this
        # raises and the callback stays pending, retried (the poller follows up too).
        session = await ctx.provider.retrieve_checkout_session(merchant_order_id)
        if session.is_paid:
            async def fulfil(uow: UnitOfWork) -> str:
                return await fulfil_in(uow, ctx, purchase_id, session)

            async def after(outcome: str) -> None:
                if outcome in REFUND_OUTCOMES:
                    await send_pending_refund(ctx, purchase_id)

            return Application("pending", fulfil, after)
        if session.failed or session.status == "expired":
            status = PurchaseStatus.FAILED if session.failed else PurchaseStatus.EXPIRED
            error = session.metadata.get("phonepe_error", "FAILED")
            reason = (f"PhonePe order failed ({error})" if status is PurchaseStatus.FAILED
                      else "checkout expired")

            async def close(uow: UnitOfWork) -> str:
                closed = await close_pending_in(uow.conn, purchase_id, status, reason=reason)
                # The event's outcome is the state the purchase closed in.
                return status.value if closed is not None else "already_closed"

            return Application(status.value, close)
        return Application("awaiting_payment")  # PENDING: the poller follows up

    return prepare
