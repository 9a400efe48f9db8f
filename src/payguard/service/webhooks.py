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
from sqlalchemy.ext.asyncio import AsyncConnection

from payguard.clock import utcnow
from payguard.errors import ValidationFailed
from payguard.inbox import note_redelivery, record_event
from payguard.service.context import AppContext
from payguard.service.lifecycle import (
    REFUND_OUTCOMES,
    close_pending_in,
    fulfil_in,
    send_pending_refund,
)
from payguard.service.redelivery import already_applied
from payguard.store.schema import inbox_events, purchases
from payguard.store.uow import UnitOfWork

__all__ = ["HANDLED_EVENTS", "MAX_FIELD", "handle_webhook", "parse_event"]

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
    async with ctx.db.read() as uow:
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


#: Longest event id and object id accepted; event types are shorter (the inbox column).
MAX_FIELD = 255
MAX_TYPE = 100


def _text(value: object, *, required: bool, limit: int = MAX_FIELD) -> bool:
    if value is None:
        return not required
    return isinstance(value, str) and 0 < len(value) <= limit


def parse_event(event: dict[str, Any]) -> tuple[str, str, dict[str, Any], str | None]:
    """``(event id, type, data.object, checkout session id)`` of a signed event, or
    ``ValidationFailed`` (422) when it does not have Stripe's event shape."""
    data = event.get("data")
    obj = data.get("object") if isinstance(data, dict) else None
    problems = []
    if not _text(event.get("id"), required=True):
        problems.append(("id", f"a string of 1 to {MAX_FIELD} characters"))
    if not _text(event.get("type"), required=True, limit=MAX_TYPE):
        problems.append(("type", f"a string of 1 to {MAX_TYPE} characters"))
    if not isinstance(obj, dict):
        problems.append(("data", "an object with an object 'object'"))
        obj = {}
    session_id = None
    if obj.get("object") == "checkout.session":
        metadata = obj.get("metadata")
        if not _text(obj.get("id"), required=True):
            problems.append(("data.object.id", "a checkout session id"))
        else:
            session_id = str(obj["id"])
        if not _text(obj.get("client_reference_id"), required=False):
            problems.append(("data.object.client_reference_id", "a string or null"))
        if metadata is not None and (not isinstance(metadata, dict) or not _text(
                metadata.get("purchase_id"), required=False)):
            problems.append(("data.object.metadata", "an object of strings"))
    if problems:
        raise ValidationFailed("the event does not have the shape of a Stripe event",
                               errors=[{"loc": ["body", *loc.split(".")], "msg": msg}
                                       for loc, msg in problems])
    return str(event["id"]), str(event["type"]), obj, session_id


async def handle_webhook(ctx: AppContext, payload: bytes,
                         signature: str | None) -> dict[str, Any]:
    event = ctx.provider.construct_event(payload, signature)  # 400 on a bad signature
    event_id, event_type, obj, session_id = parse_event(event)  # 422 on a bad shape
    # Unknown types are counted under one label, so a signed sender cannot grow the
    # metric's label set (or the log) with made-up types.
    label = event_type if event_type in HANDLED_EVENTS else "other"

    if await already_applied(ctx.db, "stripe", event_id):
        # A redelivery: answer without asking the provider again. The inbox insert in the
        # effects' transaction below stays the guard for deliveries racing this check.
        ctx.metrics.webhook_event(label, "duplicate")
        return {"received": True, "duplicate": True}

    purchase_id = None
    if event_type in HANDLED_EVENTS and session_id:
        purchase_id = await _find_purchase(ctx, obj)
    session = None
    if purchase_id is not None and session_id:
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
            return True, "duplicate"
        if outcome == "pending":
            assert purchase_id is not None and session is not None
            outcome = await fulfil_in(uow, ctx, purchase_id, session)
            await _set_outcome(uow.conn, event_id, outcome)
        elif outcome in ("expired", "failed"):
            assert purchase_id is not None
            reason = "checkout expired" if outcome == "expired" else "async payment failed"
            closed = await close_pending_in(uow.conn, purchase_id, outcome, reason=reason)
            if closed is None:
                await _set_outcome(uow.conn, event_id, "already_closed")
        return False, outcome

    duplicate, outcome = await ctx.db.transaction(apply)
    ctx.metrics.webhook_event(label, "duplicate" if duplicate else outcome)
    if outcome in REFUND_OUTCOMES and purchase_id is not None:
        await send_pending_refund(ctx, purchase_id)
    log.info("webhook %s %s -> %s", event_id[:100], event_type[:100], outcome)
    return {"received": True, "duplicate": duplicate}


async def _set_outcome(conn: AsyncConnection, event_id: str, outcome: str) -> None:
    await conn.execute(update(inbox_events).where(
        inbox_events.c.provider == "stripe", inbox_events.c.event_id == event_id
    ).values(outcome=outcome))
