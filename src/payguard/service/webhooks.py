"""Stripe webhooks: verified, recorded in the inbox, acknowledged; applied from the inbox.

A delivery is answered as soon as the event is durably in the inbox (``pending``); the
inbox applier (``service.inbox_applier``) then applies it in the background, with retries,
through ``stripe_preparer``. The event body only says *which* session changed; its state is
fetched from the provider again before acting, so the order in which deliveries arrive
does not matter. The inbox row (UNIQUE provider event id) dedupes deliveries, and its
``pending -> applied`` flip in the effects' transaction makes each event id apply exactly
once, whatever the number and concurrency of deliveries and appliers.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from sqlalchemy import select

from payguard import inbox
from payguard.clock import utcnow
from payguard.errors import ValidationFailed
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

__all__ = ["HANDLED_EVENTS", "MAX_FIELD", "PROVIDER", "handle_webhook", "parse_event",
           "stripe_preparer"]

PROVIDER = "stripe"

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
    """Verify, record durably, answer. The event is applied afterwards from the inbox."""
    event = ctx.provider.construct_event(payload, signature)  # 400 on a bad signature
    event_id, event_type, _obj, session_id = parse_event(event)  # 422 on a bad shape
    # Unknown types are counted under one label, so a signed sender cannot grow the
    # metric's label set (or the log) with made-up types.
    label = event_type if event_type in HANDLED_EVENTS else "other"

    if await already_applied(ctx.db, PROVIDER, event_id):
        # A redelivery (most deliveries in a storm): answered without asking the provider.
        ctx.metrics.webhook_event(label, "duplicate")
        return {"received": True, "duplicate": True}

    handled = event_type in HANDLED_EVENTS and session_id is not None
    # Nothing to apply: another type, or a handled type about no checkout session.
    final = "unknown_session" if event_type in HANDLED_EVENTS else "ignored"
    now = utcnow()

    async def record(uow: UnitOfWork) -> bool:
        if handled:
            new = await inbox.enqueue_event(
                uow.conn, provider=PROVIDER, event_id=event_id, type=event_type,
                object_id=session_id, payload=payload, now=now, lease=ctx.inbox.lease)
        else:  # nothing to apply: recorded as final right away
            new = await inbox.record_event(
                uow.conn, provider=PROVIDER, event_id=event_id, type=event_type,
                object_id=session_id, outcome=final, now=now)
        if not new:  # a concurrent delivery of the same event won the insert
            await note_redelivery(uow.conn, provider=PROVIDER, event_id=event_id)
        return new

    new = await ctx.db.transaction(record)
    if not new:
        ctx.metrics.webhook_event(label, "duplicate")
    elif not handled:
        ctx.metrics.webhook_event(label, final)
    else:  # counted with its outcome once applied
        ctx.inbox.submit(InboxEvent(PROVIDER, event_id, event_type, session_id,
                                    payload, attempts=0))
    return {"received": True, "duplicate": not new}


def stripe_preparer(ctx: AppContext) -> Prepare:
    """How a pending Stripe event is applied (registered with the inbox applier)."""

    async def prepare(event: InboxEvent) -> Application:
        data = json.loads(event.payload).get("data") or {}
        obj = data.get("object") or {}
        session_id = event.object_id
        purchase_id = await _find_purchase(ctx, obj) if session_id else None
        if purchase_id is None or session_id is None:
            return Application("unknown_session")
        # The nudge: ask the provider for the truth. If it is unreachable this raises and
        # the event stays pending, retried with backoff.
        session = await ctx.provider.retrieve_checkout_session(session_id)
        if session.payment_status == "paid":
            async def fulfil(uow: UnitOfWork) -> str:
                return await fulfil_in(uow, ctx, purchase_id, session)

            async def after(outcome: str) -> None:
                if outcome in REFUND_OUTCOMES:
                    await send_pending_refund(ctx, purchase_id)

            return Application("pending", fulfil, after)
        if session.status == "expired" or event.type == "checkout.session.async_payment_failed":
            status = (PurchaseStatus.EXPIRED if session.status == "expired"
                      else PurchaseStatus.FAILED)
            reason = ("checkout expired" if status is PurchaseStatus.EXPIRED
                      else "async payment failed")

            async def close(uow: UnitOfWork) -> str:
                closed = await close_pending_in(uow.conn, purchase_id, status, reason=reason)
                # The event's outcome is the state the purchase closed in.
                return status.value if closed is not None else "already_closed"

            return Application(status.value, close)
        return Application("awaiting_payment")

    return prepare
