"""Provider webhooks: verified, deduplicated by event id, and treated as a nudge.

The event body only says *which* session changed; its state is fetched from the provider
again before acting, so the order in which deliveries arrive does not matter. The inbox
row (UNIQUE provider event id) is inserted in the same transaction as the effects: an
event id is applied at most once, whatever the number and concurrency of deliveries.
"""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy import select, update

from payguard.clock import utcnow
from payguard.inbox import note_redelivery, record_event
from payguard.service.context import AppContext
from payguard.service.lifecycle import close_pending_in, fulfil_in, send_pending_refund
from payguard.service.redelivery import already_applied
from payguard.store.schema import inbox_events, purchases
from payguard.store.uow import UnitOfWork

__all__ = ["HANDLED_EVENTS", "handle_webhook"]

log = logging.getLogger("payguard.webhooks")

HANDLED_EVENTS = {
    "checkout.session.completed",
    "checkout.session.async_payment_succeeded",
    "checkout.session.async_payment_failed",
    "checkout.session.expired",
}


async def _find_purchase(ctx: AppContext, session: dict[str, Any]) -> str | None:
    metadata = session.get("metadata") or {}
    candidates = [c for c in (metadata.get("purchase_id"), session.get("client_reference_id"))
                  if c]
    async with ctx.db.unit_of_work(readonly=True) as uow:
        row = (await uow.conn.execute(select(purchases.c.id, purchases.c.provider_session_id)
                                      .where(purchases.c.provider_session_id == session["id"])
                                      )).first()
        if row is not None:
            return str(row.id)
        for purchase_id in candidates:
            row = (await uow.conn.execute(select(purchases.c.id, purchases.c.provider_session_id)
                                          .where(purchases.c.id == purchase_id))).first()
            # Our checkout had not recorded the session yet (crash between phases).
            if row is not None and row.provider_session_id in (None, session["id"]):
                return str(row.id)
    return None


async def handle_webhook(ctx: AppContext, payload: bytes,
                         signature: str | None) -> dict[str, Any]:
    event = ctx.provider.construct_event(payload, signature)  # 400 on a bad signature
    event_id, event_type = str(event["id"]), str(event["type"])
    obj = (event.get("data") or {}).get("object") or {}
    session_id = obj.get("id") if obj.get("object") == "checkout.session" else None
    metrics = ctx.extras.get("metrics")

    if await already_applied(ctx.db, "stripe", event_id):
        # A redelivery: answer without asking the provider again. The inbox insert in the
        # effects' transaction below stays the guard for deliveries racing this check.
        if metrics is not None:
            metrics.webhook_event(event_type, "duplicate")
        return {"received": True, "duplicate": True}

    purchase_id = None
    if event_type in HANDLED_EVENTS and session_id:
        purchase_id = await _find_purchase(ctx, obj)
    session = None
    if purchase_id is not None:
        # The nudge: ask the provider for the truth. If it is unreachable we answer 503
        # and record nothing, so the provider delivers the event again later.
        session = await ctx.provider.retrieve_checkout_session(session_id)

    async def apply(uow: UnitOfWork) -> tuple[bool, str]:
        if event_type not in HANDLED_EVENTS:
            outcome = "ignored"
        elif purchase_id is None or session is None:
            outcome = "unknown_session"
        elif session.payment_status == "paid":
            outcome = "pending"  # decided below, after the dedupe claim
        elif session.status == "expired":
            outcome = "expired"
        elif event_type == "checkout.session.async_payment_failed":
            outcome = "failed"
        else:
            outcome = "awaiting_payment"
        if not await record_event(uow.conn, provider="stripe", event_id=event_id,
                                  type=event_type, object_id=session_id, outcome=outcome,
                                  now=utcnow()):
            await note_redelivery(uow.conn, provider="stripe", event_id=event_id)
            await uow.commit()
            return True, "duplicate"
        if outcome == "pending":
            assert purchase_id is not None and session is not None
            outcome = await fulfil_in(uow, ctx, purchase_id, session)
            await _set_outcome(uow, event_id, outcome)
        elif outcome in ("expired", "failed"):
            assert purchase_id is not None
            reason = "checkout expired" if outcome == "expired" else "async payment failed"
            closed = await close_pending_in(uow, purchase_id, outcome, reason=reason)
            if closed is None:
                await _set_outcome(uow, event_id, "already_closed")
        await uow.commit()
        return False, outcome

    duplicate, outcome = await ctx.db.run(apply)
    if metrics is not None:
        metrics.webhook_event(event_type, "duplicate" if duplicate else outcome)
    if outcome == "refund" and purchase_id is not None:
        await send_pending_refund(ctx, purchase_id)
    log.info("webhook %s %s -> %s", event_id, event_type, outcome)
    return {"received": True, "duplicate": duplicate}


async def _set_outcome(uow: UnitOfWork, event_id: str, outcome: str) -> None:
    await uow.conn.execute(update(inbox_events).where(
        inbox_events.c.provider == "stripe", inbox_events.c.event_id == event_id
    ).values(outcome=outcome))
