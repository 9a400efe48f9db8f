"""A card purchase's life after checkout: fulfil, close (cancel / fail / expire), refund.

``fulfil`` is the one idempotent completion shared by the webhook, the reconciler and
anything else that learns a session was paid: it locks the purchase row, checks its state
and completes it once (receipt, seat or items kept, wallet credited, email queued). A
payment that lands on a purchase that was closed meanwhile re-takes its seat or items if
they are still free; otherwise the payment is refunded through the provider.
"""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from payguard import ledger
from payguard.clock import utcnow
from payguard.errors import (
    ClassRepLimitReached,
    OutOfStock,
    ProviderUnavailable,
)
from payguard.idempotency import outbound_key
from payguard.locks.fencing import Fence
from payguard.outbox import confirmation_email, enqueue
from payguard.providers import ProviderSession
from payguard.service.context import AppContext
from payguard.service.holds import hold_keys, keep_holds, release_holds
from payguard.service.numbers import issue_receipt
from payguard.service.purchases import load_purchase
from payguard.states import CLOSED, PAID, PurchaseStatus
from payguard.store.lock_order import lock_shared_rows
from payguard.store.schema import purchases, users
from payguard.store.uow import UnitOfWork

__all__ = [
    "AMOUNT_MISMATCH",
    "REFUND_OUTCOMES",
    "close_pending",
    "fulfil",
    "fulfil_in",
    "send_pending_refund",
]

log = logging.getLogger("payguard.lifecycle")

#: failure_reason of a purchase whose payment differed from it (refunded in full).
AMOUNT_MISMATCH = "the payment's amount or currency differs from the purchase"
#: fulfil outcomes that leave a provider refund to send.
REFUND_OUTCOMES = ("refund", "mismatch")


async def lock_purchase(conn: AsyncConnection, purchase_id: str) -> Any:
    """The purchase row, locked until the transaction ends (SQLite: the write lock)."""
    stmt = select(purchases).where(purchases.c.id == purchase_id)
    if conn.dialect.name == "postgresql":
        stmt = stmt.with_for_update()
    return (await conn.execute(stmt)).first()


async def close_pending_in(conn: AsyncConnection, purchase_id: str, status: PurchaseStatus,
                           *, reason: str | None = None, user_id: str | None = None) -> Any:
    """pending -> ``status`` and release the holds, in the caller's transaction, once."""
    now = utcnow()
    stmt = (
        update(purchases)
        .where(purchases.c.id == purchase_id, purchases.c.status == PurchaseStatus.PENDING)
        .values(status=status, failure_reason=reason, updated_at=now)
        .returning(*purchases.c)
    )
    if user_id is not None:
        stmt = stmt.where(purchases.c.user_id == user_id)
    row = (await conn.execute(stmt)).first()
    if row is not None:
        await release_holds(conn, row, now)
    return row


async def close_pending(ctx: AppContext, purchase_id: str, status: PurchaseStatus, *,
                        reason: str | None = None, fence: Fence | None = None) -> bool:
    """``close_pending_in`` in its own transaction; under ``fence`` when a lock holder
    closes (a holder whose lease lapsed is refused with ``StaleFencingToken``)."""
    async def close(uow: UnitOfWork) -> bool:
        if fence is not None:
            await fence.check(uow.conn)
        return await close_pending_in(uow.conn, purchase_id, status, reason=reason) is not None

    return await ctx.db.transaction(close)


async def fulfil_in(uow: UnitOfWork, ctx: AppContext, purchase_id: str,
                    session: ProviderSession) -> str:
    """Complete a paid purchase in the caller's transaction. Returns what happened:
    ``completed``, ``already``, ``refund`` (late payment, seat gone: refund needed),
    ``mismatch`` (paid another amount or currency: closed, refund needed), ``unknown``."""
    conn, now = uow.conn, utcnow()
    row = await lock_purchase(conn, purchase_id)
    if row is None:
        return "unknown"
    if row.status in PAID:
        return "already"
    if session.amount_total != int(row.amount) or session.currency.upper() != row.currency.upper():
        # Never complete a purchase on a payment for another amount or currency: refund
        # what was paid (in full, through the provider) and close the purchase.
        log.error("purchase %s: provider session %s paid %s %s, the purchase is %s %s; "
                  "refunding", row.id, session.id, session.amount_total, session.currency,
                  row.amount, row.currency)
        if row.status == PurchaseStatus.PENDING:
            await release_holds(conn, row, now)
        await conn.execute(
            update(purchases).where(purchases.c.id == row.id).values(
                status=PurchaseStatus.REFUNDED, refund_status="pending", refunded_at=now,
                updated_at=now,
                provider_session_id=row.provider_session_id or session.id,
                provider_payment_intent=session.payment_intent,
                failure_reason=AMOUNT_MISMATCH, expires_at=None,
            ))
        return "mismatch"
    late = row.status in CLOSED
    amount, currency = int(row.amount), row.currency
    card = ledger.platform_account_id("card", currency)
    if row.kind == "topup":
        target = ledger.wallet_account_id(row.user_id, currency)
    else:
        target = ledger.platform_account_id("revenue", currency)
    # The global lock order (store.lock_order): wallet, seat or stock counter, platform.
    await lock_shared_rows(conn, account_ids=(card, target), capacity_keys=hold_keys(row))
    try:
        async with conn.begin_nested():
            await keep_holds(conn, row, now)
    except (ClassRepLimitReached, OutOfStock):
        await conn.execute(
            update(purchases).where(purchases.c.id == row.id).values(
                status=PurchaseStatus.REFUNDED, refund_status="pending", refunded_at=now,
                updated_at=now,
                provider_session_id=row.provider_session_id or session.id,
                provider_payment_intent=session.payment_intent,
                failure_reason="paid after the purchase closed and its seat or items were gone",
            ))
        return "refund"

    if amount > 0:
        await ledger.transfer(conn, debit=card, credit=target, amount=amount, currency=currency,
                              kind="topup" if row.kind == "topup" else "card_payment",
                              purchase_id=row.id, reason=f"card payment {row.order_number}",
                              now=now)
    receipt = await issue_receipt(conn, ctx.settings, purchase_id=row.id, amount=amount,
                                  currency=currency, now=now)
    await conn.execute(update(purchases).where(purchases.c.id == row.id).values(
        status=PurchaseStatus.COMPLETED, receipt_number=receipt, completed_at=now,
        updated_at=now,
        provider_session_id=row.provider_session_id or session.id,
        provider_payment_intent=session.payment_intent, card_brand=session.card_brand,
        card_last4=session.card_last4, billing_name=session.customer_name,
        billing_email=session.customer_email, expires_at=None,
        failure_reason="completed after it had been closed" if late else None,
    ))
    user = (await conn.execute(select(users).where(users.c.id == row.user_id))).one()
    view = await load_purchase(conn, row.id)
    subject, body = confirmation_email({**view, **view["pricing"]}, user_email=user.email,
                                       user_name=user.name)
    await enqueue(conn, dedupe_key=f"purchase-confirmation:{row.id}", kind="confirmation",
                  recipient=user.email, subject=subject, body=body, purchase_id=row.id,
                  user_id=row.user_id, now=now)
    uow.after_commit(ctx.outbox.wake)
    return "completed"


async def fulfil(ctx: AppContext, purchase_id: str, session: ProviderSession) -> str:
    """``fulfil_in`` in a transaction of its own, then a late payment's refund is sent."""
    outcome = await ctx.db.transaction(lambda uow: fulfil_in(uow, ctx, purchase_id, session))
    if outcome in REFUND_OUTCOMES:
        await send_pending_refund(ctx, purchase_id)
    return outcome


async def send_pending_refund(ctx: AppContext, purchase_id: str) -> bool:
    """Push a booked card refund to the provider; safe to repeat (derived key).

    False when the provider could not be reached: the reconciler tries again later.
    """
    async with ctx.db.read() as uow:
        row = (await uow.conn.execute(select(purchases).where(
            purchases.c.id == purchase_id, purchases.c.refund_status == "pending"))).first()
    if row is None:
        return True
    payment_intent = row.provider_payment_intent
    if payment_intent is None and row.provider_session_id:
        try:
            payment_intent = (await ctx.provider.retrieve_checkout_session(
                row.provider_session_id)).payment_intent
        except ProviderUnavailable:
            return False
    if payment_intent is None:
        log.error("purchase %s: refund pending but no payment intent is known", purchase_id)
        return False
    amount = int(row.amount)
    if row.failure_reason == AMOUNT_MISMATCH and row.provider_session_id:
        # Paid another amount than the purchase's: refund what was actually paid.
        try:
            amount = (await ctx.provider.retrieve_checkout_session(
                row.provider_session_id)).amount_total
        except ProviderUnavailable:
            return False
    try:
        refund_id = await ctx.provider.refund(
            payment_intent=payment_intent, amount=amount,
            idempotency_key=outbound_key(row.id, "refund"), reason=row.failure_reason)
    except ProviderUnavailable:
        log.warning("purchase %s: provider refund failed; will retry", purchase_id)
        return False

    await ctx.db.transaction(lambda uow: uow.conn.execute(update(purchases).where(
        purchases.c.id == purchase_id, purchases.c.refund_status == "pending"
    ).values(refund_status="done", refund_id=refund_id, updated_at=utcnow())))
    return True
