"""Card checkout: one pending purchase and one provider session per (user, item).

Concurrency strategy, per hot spot:
- Two requests of one user for one item: the lock service, key
  ``checkout:{user}:{item}``, waited on for ``PAYGUARD_CHECKOUT_LOCK_WAIT``; a partial
  unique index (one pending purchase per user and item) backs it up in the database.
- The last class-rep seat / stock item: the capacity counter's conditional increment.
- A holder paused past its lease (GC, SIGSTOP, a slow provider): every phase's transaction
  checks the lease's fencing token against the newest one recorded for the lock key, so once
  a newer holder wrote, the paused one can record nothing (``409 PAYMENT_IN_PROGRESS``).
- Crashes: no transaction spans the provider call. Phase 1 reserves and records the
  pending purchase (recovery point ``reserved``); the provider call uses the derived key
  ``payguard:{purchase}:create``, so repeating it returns the same session; phase 2
  records the session (``session_created``). A retry, a second click or the reconciler
  resumes from whichever phase committed last: never two sessions, never a leaked seat.
"""

from __future__ import annotations

import asyncio
import math
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from payguard.clock import as_utc, isoformat, utcnow
from payguard.errors import (
    AlreadyPurchased,
    LockTimeout,
    NotFound,
    PaymentInProgress,
    ProviderUnavailable,
    ValidationFailed,
)
from payguard.idempotency import Claim, outbound_key
from payguard.idempotency import store as idem
from payguard.ids import new_id
from payguard.locks import Fence, StaleFencingToken
from payguard.providers import ProviderSession
from payguard.service.context import AppContext
from payguard.service.holds import reserve_holds
from payguard.service.lifecycle import close_pending
from payguard.service.limits import check_checkout_limits
from payguard.service.numbers import next_order_number
from payguard.service.pricing import Pricing, price_program
from payguard.service.principal import Principal
from payguard.states import PurchaseStatus
from payguard.store.schema import products, programs, purchases, users
from payguard.store.uow import UnitOfWork

__all__ = ["CHECKOUT_OPERATION", "CheckoutTarget", "ensure_session", "session_payload",
           "start_checkout"]

#: The operation kind a checkout records on its idempotency claim: the reconciler finishes
#: an abandoned key of this kind from its purchase's recorded session.
CHECKOUT_OPERATION = "checkout"


@dataclass(frozen=True, slots=True)
class CheckoutTarget:
    program_id: str | None = None
    class_rep: bool = False
    product_id: str | None = None
    quantity: int = 1
    topup_amount: int | None = None

    @property
    def item_key(self) -> str:
        if self.program_id:
            return f"program:{self.program_id}"
        if self.product_id:
            return f"product:{self.product_id}"
        return f"topup:{self.topup_amount}"



def session_payload(row: Any, *, existing: bool) -> dict[str, Any]:
    return {
        "session_id": row.provider_session_id, "url": row.checkout_url,
        "purchase_id": row.id, "order_number": row.order_number, "amount": int(row.amount),
        "currency": row.currency, "existing": existing, "status": row.status,
        "expires_at": isoformat(row.expires_at),
    }


async def _load(ctx: AppContext, purchase_id: str) -> Any:
    async with ctx.db.read() as uow:
        return (await uow.conn.execute(
            select(purchases).where(purchases.c.id == purchase_id))).first()


async def start_checkout(ctx: AppContext, user: Principal, target: CheckoutTarget,
                         claim: Claim | None) -> tuple[int, dict[str, Any]]:
    """Create (or return the user's existing) checkout session for ``target``."""
    assert user.user_id is not None
    lock_key = f"checkout:{user.user_id}:{target.item_key}"
    # A short lease renewed while we live: a holder that dies frees the key within
    # ``holder_lease`` seconds; one alive but stuck keeps it for the lock timeout at most.
    ttl = ctx.settings.holder_lease
    renewals = math.ceil(ctx.settings.idempotency_lock_timeout / (ttl / 3))
    try:
        async with ctx.locks.hold(lock_key, ttl=ttl, wait=ctx.settings.checkout_lock_wait,
                                  auto_renew=True, max_renewals=renewals) as lease:
            # Every phase's transaction carries the lease's token: if this process was
            # paused past its lease and another request took over, its writes are refused.
            fence = Fence(lock_key, lease.fencing_token)
            return await _checkout_locked(ctx, user, target, claim, fence)
    except LockTimeout as exc:  # held by another request (an outage is not caught here)
        raise PaymentInProgress(
            "another request is creating a checkout for this item; retry shortly"
        ) from exc
    except StaleFencingToken as exc:
        raise PaymentInProgress(
            "this request's lock lapsed and a newer request took the checkout over; retry"
        ) from exc


async def _checkout_locked(ctx: AppContext, user: Principal, target: CheckoutTarget,
                           claim: Claim | None, fence: Fence) -> tuple[int, dict[str, Any]]:
    now = utcnow()
    if claim is not None and claim.purchase_id:
        # A retry of a request that died mid-way: resume from its recovery point.
        row = await _load(ctx, claim.purchase_id)
        if row is not None and row.status == PurchaseStatus.PENDING:
            return 201, await ensure_session(ctx, row, claim=claim, existing=False,
                                             fence=fence)

    async with ctx.db.read() as uow:
        existing = (await uow.conn.execute(
            select(purchases).where(purchases.c.user_id == user.user_id,
                                    purchases.c.item_key == target.item_key,
                                    purchases.c.status == PurchaseStatus.PENDING)
        )).first()
    if existing is not None:
        expires_at = as_utc(existing.expires_at)
        if expires_at is None or expires_at > now:
            return 200, await ensure_session(ctx, existing, claim=claim, existing=True,
                                             fence=fence)
        await close_pending(ctx, existing.id, PurchaseStatus.EXPIRED, reason="checkout expired",
                            fence=fence)

    row = await ctx.db.transaction(
        lambda uow: _reserve(uow.conn, ctx, user, target, claim, fence))
    return 201, await ensure_session(ctx, row, claim=claim, existing=False, fence=fence)


async def _reserve(conn: AsyncConnection, ctx: AppContext, user: Principal,
                   target: CheckoutTarget, claim: Claim | None, fence: Fence) -> Any:
    """Phase 1: price, reserve, number and record the pending purchase."""
    settings = ctx.settings
    await fence.check(conn)
    now = utcnow()
    purchase_id = new_id("pur")
    expires_at = now + timedelta(seconds=settings.checkout_expires_after)
    values: dict[str, Any] = {"program_id": None, "product_id": None, "quantity": 1,
                              "is_class_rep": False}
    if target.program_id:
        program = (await conn.execute(
            select(programs).where(programs.c.id == target.program_id))).first()
        if program is None:
            raise NotFound(f"no program {target.program_id!r}")
        done = await conn.scalar(select(purchases.c.id).where(
            purchases.c.user_id == user.user_id, purchases.c.program_id == program.id,
            purchases.c.status == PurchaseStatus.COMPLETED))
        if done is not None:
            raise AlreadyPurchased("you already bought this program")
        pricing = price_program(program, class_rep=target.class_rep, now=now)
        currency, kind = program.currency, "program"
        values.update(program_id=program.id, is_class_rep=target.class_rep)
    elif target.product_id:
        product = (await conn.execute(
            select(products).where(products.c.id == target.product_id))).first()
        if product is None:
            raise NotFound(f"no product {target.product_id!r}")
        total = int(product.price) * target.quantity
        pricing = Pricing(total, 0, 0)
        currency, kind = product.currency, "product"
        values.update(product_id=product.id, quantity=target.quantity)
    else:
        assert target.topup_amount is not None
        pricing = Pricing(target.topup_amount, 0, 0)
        currency, kind = settings.currency, "topup"
    if pricing.final_price > settings.max_amount:
        raise ValidationFailed("the total exceeds PAYGUARD_MAX_AMOUNT", errors=[
            {"loc": ["body"], "msg": "total above PAYGUARD_MAX_AMOUNT"}])
    if pricing.final_price == 0:
        raise ValidationFailed("nothing to pay by card: the final price is 0", errors=[
            {"loc": ["body"], "msg": "final price is 0"}])

    assert user.user_id is not None
    await check_checkout_limits(conn, settings, user.user_id, kind=kind,
                                quantity=values["quantity"], now=now)
    await reserve_holds(conn, purchase_id=purchase_id, product_id=values["product_id"],
                        program_id=values["program_id"], is_class_rep=values["is_class_rep"],
                        quantity=values["quantity"], expires_at=expires_at, now=now)
    order_number = await next_order_number(conn, settings, now)
    try:
        async with conn.begin_nested():
            await conn.execute(insert(purchases).values(
                id=purchase_id, user_id=user.user_id, order_number=order_number, kind=kind,
                status=PurchaseStatus.PENDING, payment_method="card", item_key=target.item_key,
                amount=pricing.final_price, currency=currency, full_price=pricing.full_price,
                class_rep_discount=pricing.class_rep_discount,
                early_bird_discount=pricing.early_bird_discount, expires_at=expires_at,
                created_at=now, updated_at=now, **values,
            ))
    except IntegrityError as exc:
        # The partial unique index: another pending checkout of this item exists (its
        # creator got past the lock, e.g. after a lease lapsed).
        raise PaymentInProgress("another checkout for this item is pending") from exc
    if claim is not None:
        await idem.advance(conn, claim, "reserved", now, purchase_id=purchase_id)
    return (await conn.execute(select(purchases).where(purchases.c.id == purchase_id))).first()


async def ensure_session(ctx: AppContext, row: Any, *, claim: Claim | None,
                         existing: bool, close_on_unavailable: bool = True,
                         fence: Fence | None = None) -> dict[str, Any]:
    """Phase 2 and 3: make sure the pending purchase has its provider session, recorded.

    Safe to repeat: the derived idempotency key makes the provider return the same
    session for the same purchase. ``fence``: the checkout lock's, refusing the record
    (and the close on a provider failure) to a holder whose lease lapsed; the reconciler,
    which holds no checkout lock, records without one.
    """
    if row.provider_session_id:
        return session_payload(row, existing=existing)
    if ctx.settings.test_checkout_hold_seconds and fence is not None:
        await asyncio.sleep(ctx.settings.test_checkout_hold_seconds)
    email = None
    async with ctx.db.read() as uow:
        email = await uow.conn.scalar(select(users.c.email).where(users.c.id == row.user_id))
    base = ctx.settings.public_url.rstrip("/")
    try:
        session: ProviderSession = await ctx.provider.create_checkout_session(
            purchase_id=row.id, amount=int(row.amount), currency=row.currency,
            description=f"{row.kind} {row.order_number}", customer_email=email,
            success_url=f"{base}/?purchase={row.id}&result=success",
            cancel_url=f"{base}/?purchase={row.id}&result=cancel",
            expires_at=as_utc(row.expires_at),
            metadata={"purchase_id": row.id, "order_number": row.order_number},
            idempotency_key=outbound_key(row.id, "create"),
        )
    except ProviderUnavailable:
        # Nothing may stay reserved for a checkout the user never got. (The reconciler
        # passes close_on_unavailable=False: it retries on its own backoff instead.)
        if close_on_unavailable:
            await close_pending(ctx, row.id, PurchaseStatus.FAILED,
                                reason="payment provider unavailable", fence=fence)
        raise

    async def record(uow: UnitOfWork) -> Any:
        now = utcnow()
        if fence is not None:
            await fence.check(uow.conn)
        await uow.conn.execute(
            update(purchases)
            .where(purchases.c.id == row.id, purchases.c.provider_session_id.is_(None))
            .values(provider_session_id=session.id, checkout_url=session.url,
                    provider_payment_intent=session.payment_intent, updated_at=now)
        )
        if claim is not None:
            await idem.advance(uow.conn, claim, "session_created", now)
        return (await uow.conn.execute(
            select(purchases).where(purchases.c.id == row.id))).first()

    recorded = await ctx.db.transaction(record)
    return session_payload(recorded, existing=existing)
