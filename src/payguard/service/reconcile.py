"""The reconciler: finishes what webhooks, crashes and timeouts left half-done.

One run, in this order (each step in its own short transactions, each safe to repeat):

0. PhonePe only: pending orders due for a status check on PhonePe's schedule (first after
   ``PAYGUARD_PHONEPE_POLL_FIRST`` seconds, then every 3 s backing off to every minute,
   scaled by ``PAYGUARD_PHONEPE_POLL_SCALE``; see ``providers/phonepe/schedule.py``).
   ``serve`` also runs this step alone every ``PAYGUARD_PHONEPE_POLL_INTERVAL`` seconds
   (:func:`poll_pending`), under the same lock.
1. Stuck purchases: card purchases pending longer than ``older_than`` (default
   ``PAYGUARD_STUCK_AFTER``) or past their expiry. A purchase whose session was never
   recorded (the process died between creating it and recording it) first gets it through
   ``ensure_session``: the derived provider key returns the *same* session, never a second.
   Then the provider is asked: paid -> the same idempotent ``fulfil`` the webhook uses;
   expired -> closed and its seat/items released; provider unreachable -> looked at again
   after a backoff (``next_check_at``, ``check_attempts``). A complete-but-unpaid session
   (an async payment still settling) is left alone: only its webhook tells failure apart.
2. Holds past their expiry whose purchase is no longer pending: released.
3. Dead idempotency keys (``in_progress``, holder dead or silent past the lock timeout;
   ``idempotency.store.find_abandoned``): a checkout's (the claim's operation kind is
   ``checkout``) with a purchase whose session is recorded -> completed with the 201 the
   request would have returned (``complete_abandoned``; a retry replays it, so it can never
   make a second checkout); any other key, one without recorded progress, or one whose
   purchase closed before it had a session -> deleted (``drop_abandoned``: rolled back,
   exactly what a retry taking the key over would do). A checkout key whose purchase is
   pending without a session waits for step 1 of a later run.
4. Card refunds booked but not yet accepted by the provider: pushed again.
5. Outbox messages due for (re)delivery: one dispatcher pass.
6. Purges: idempotency keys past retention, expired lock leases, inbox rows past
   ``INBOX_RETENTION``.

Across instances only one run works at a time: a try-lock on ``reconciler`` through the
lock service. A run that finds it taken returns zeros with ``skipped: true``. Every action
is idempotent on its own (conditional updates, row locks), so the lock saves work; it is not
what keeps a purchase from completing twice.
"""

from __future__ import annotations

import contextlib
import logging
import time
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, func, or_, select, update

from payguard.clock import as_utc, utcnow
from payguard.errors import LockTimeout, ProviderUnavailable
from payguard.idempotency import store as idem
from payguard.idempotency.responses import json_response
from payguard.idempotency.store import reap_expired
from payguard.inbox import purge_older_than
from payguard.locks import LockBackendUnavailable
from payguard.providers.phonepe.schedule import next_poll_delay
from payguard.service.checkout import CHECKOUT_OPERATION, ensure_session, session_payload
from payguard.service.context import AppContext
from payguard.service.holds import release_holds
from payguard.service.lifecycle import close_pending_in, fulfil, send_pending_refund
from payguard.service.records import PurchaseRecord
from payguard.service.views import purchase_view
from payguard.states import PurchaseStatus
from payguard.store.schema import purchases, reservations
from payguard.store.uow import UnitOfWork

__all__ = ["COUNT_KEYS", "RECONCILE_LOCK", "backoff_seconds", "list_stuck", "poll_pending",
           "reconcile"]

log = logging.getLogger("payguard.reconcile")

RECONCILE_LOCK = "reconciler"
#: The contract's counts first, then the extra detail.
COUNT_KEYS = ("checked", "completed", "failed", "expired", "released", "refunded",
              "deferred", "keys_completed", "keys_rolled_back", "refunds_sent",
              "outbox_sent", "outbox_failed", "purged_keys", "purged_leases",
              "purged_inbox", "errors")
BATCH = 200
INBOX_RETENTION = timedelta(days=30)  # Stripe retries a webhook for up to 3 days
BACKOFF_BASE, BACKOFF_CAP = 15.0, 3600.0


def backoff_seconds(attempts: int) -> float:
    """Delay before looking again after ``attempts`` failed provider lookups."""
    return float(min(BACKOFF_CAP, BACKOFF_BASE * 2 ** max(0, attempts - 1)))



async def list_stuck(ctx: AppContext, older_than: float) -> list[dict[str, Any]]:
    """Purchases pending for longer than ``older_than`` seconds, oldest first."""
    cutoff = utcnow() - timedelta(seconds=older_than)
    async with ctx.db.read() as uow:
        rows = (await uow.conn.execute(
            select(purchases)
            .where(purchases.c.status == PurchaseStatus.PENDING, purchases.c.created_at <= cutoff)
            .order_by(purchases.c.created_at, purchases.c.id).limit(1000)
        )).all()
    # Pending purchases have no delivered items yet (reserved ones are not the buyer's).
    return [purchase_view(PurchaseRecord.from_row(r), []) for r in rows]


async def reconcile(ctx: AppContext, *, older_than: float | None = None) -> dict[str, Any]:
    """One reconciler run; returns (and logs) what it did."""
    counts = dict.fromkeys(COUNT_KEYS, 0)
    # The lease only saves duplicate work (see the module docstring), so a generous TTL
    # with renewal is fine; a crashed holder's lease lapses after ``ttl``.
    ttl = max(60.0, ctx.settings.provider_timeout * 6)
    started = time.monotonic()
    async with contextlib.AsyncExitStack() as stack:
        try:
            await stack.enter_async_context(ctx.locks.hold(
                RECONCILE_LOCK, ttl=ttl, wait=0, auto_renew=True, max_renewals=10_000))
        except (LockTimeout, LockBackendUnavailable) as exc:
            # Another run holds the lock, or the lock backend is down: either way no run
            # can be sure it is alone, and the next interval tries again.
            log.info("reconcile skipped: %s", exc.detail)
            ctx.metrics.reconcile_run("skipped", counts, 0.0)
            return {**counts, "skipped": True}
        age = float(ctx.settings.stuck_after if older_than is None else older_than)
        for step in (_poll_due, _stuck_purchases, _orphan_holds, _dead_keys, _refunds,
                     _outbox, _purge):
            try:
                await step(ctx, counts, age)
            except Exception:
                # One failing step (a provider or SMTP outage) must not starve the others.
                counts["errors"] += 1
                log.exception("reconcile step %s failed", step.__name__)
    seconds = time.monotonic() - started
    log.info("reconcile %s", " ".join(f"{k}={v}" for k, v in counts.items()))
    ctx.metrics.reconcile_run("error" if counts["errors"] else "ok", counts, seconds)
    return {**counts, "skipped": False}


# ---- 0. PhonePe status polling ------------------------------------------------------------

async def poll_pending(ctx: AppContext) -> dict[str, Any]:
    """Only step 0, under the reconciler's lock (skipped when a run holds it)."""
    counts = dict.fromkeys(COUNT_KEYS, 0)
    try:
        async with ctx.locks.hold(RECONCILE_LOCK, ttl=max(60.0, ctx.settings.provider_timeout * 6),
                                  wait=0, auto_renew=True, max_renewals=10_000):
            await _poll_due(ctx, counts, 0.0)
    except (LockTimeout, LockBackendUnavailable):
        return {**counts, "skipped": True}
    return {**counts, "skipped": False}


async def _poll_due(ctx: AppContext, counts: dict[str, int], _age: float) -> None:
    settings = ctx.settings
    if settings.payment_provider != "phonepe":
        return
    now = utcnow()
    first = timedelta(seconds=settings.phonepe_poll_first)
    async with ctx.db.read() as uow:
        rows = (await uow.conn.execute(
            select(purchases)
            .where(purchases.c.status == PurchaseStatus.PENDING,
                   purchases.c.payment_method == "card",
                   purchases.c.provider_session_id.is_not(None),
                   or_(and_(purchases.c.next_check_at.is_(None),
                            purchases.c.created_at <= now - first),
                       purchases.c.next_check_at <= now))
            .order_by(purchases.c.created_at, purchases.c.id).limit(BATCH)
        )).all()
    for row in rows:
        counts["checked"] += 1
        try:
            outcome = await _check_purchase(ctx, row, now, counts)
        except ProviderUnavailable as exc:
            log.warning("purchase %s: status check failed (%s)", row.id, exc)
            outcome = "deferred"
        except Exception:
            outcome = "errors"
            log.exception("polling purchase %s failed", row.id)
        if outcome in counts:
            counts[outcome] += 1
        if outcome in ("none", "deferred", "errors"):
            since_first = (now - (as_utc(row.created_at) + first)).total_seconds()
            delay = next_poll_delay(since_first, scale=settings.phonepe_poll_scale)
            await _schedule(ctx, row.id, now + timedelta(seconds=delay))


async def _schedule(ctx: AppContext, purchase_id: str, at: datetime) -> None:
    await ctx.db.transaction(lambda uow: uow.conn.execute(
        update(purchases)
        .where(purchases.c.id == purchase_id, purchases.c.status == PurchaseStatus.PENDING)
        .values(next_check_at=at)))


# ---- 1. stuck purchases -------------------------------------------------------------------

async def _stuck_purchases(ctx: AppContext, counts: dict[str, int], age: float) -> None:
    now = utcnow()
    async with ctx.db.read() as uow:
        rows = (await uow.conn.execute(
            select(purchases)
            .where(purchases.c.status == PurchaseStatus.PENDING,
                   purchases.c.payment_method == "card",
                   or_(purchases.c.created_at <= now - timedelta(seconds=age),
                       purchases.c.expires_at <= now),
                   or_(purchases.c.next_check_at.is_(None), purchases.c.next_check_at <= now))
            .order_by(purchases.c.created_at, purchases.c.id).limit(BATCH)
        )).all()
    if rows:
        log.warning("reconciler: %d purchase(s) pending longer than %gs or past expiry: %s",
                    len(rows), age, ", ".join(r.id for r in rows[:20]))
    for row in rows:
        counts["checked"] += 1
        try:
            outcome = await _check_purchase(ctx, row, now, counts)
        except ProviderUnavailable as exc:
            outcome = "deferred"
            await _defer(ctx, row, now, str(exc))
        except Exception:  # one odd purchase must not stop the batch
            outcome = "errors"
            log.exception("reconciling purchase %s failed", row.id)
        if outcome in counts:
            counts[outcome] += 1


async def _check_purchase(ctx: AppContext, row: Any, now: datetime,
                          counts: dict[str, int]) -> str:
    past_expiry = (as_utc(row.expires_at) or now) <= now
    session_id = row.provider_session_id
    if session_id is None:
        try:
            payload = await ensure_session(ctx, row, claim=None, existing=False,
                                           close_on_unavailable=False)
        except ProviderUnavailable:
            if not past_expiry:
                raise
            # The session was never recorded, so it was never shown to anyone and
            # nobody can have paid it: closing is safe without the provider's word.
            return await _close(ctx, row.id, PurchaseStatus.EXPIRED, counts,
                                "checkout expired before its session was recorded")
        session_id = payload["session_id"]
        log.warning("purchase %s: recorded provider session %s left unrecorded by a crash",
                    row.id, session_id)
    session = await ctx.provider.retrieve_checkout_session(session_id)
    if session.payment_status == "paid":
        outcome = await fulfil(ctx, row.id, session)
        return {"completed": "completed", "refund": "refunded",
                "mismatch": "refunded"}.get(outcome, "none")
    if session.failed and not past_expiry:
        return await _close(ctx, row.id, PurchaseStatus.FAILED, counts,
                            "payment failed at the provider")
    if session.status == "expired":
        return await _close(ctx, row.id, PurchaseStatus.EXPIRED, counts,
                            "checkout expired")
    # Open (the buyer may still pay) or complete-but-unpaid (async payment settling).
    return "none"


async def _close(ctx: AppContext, purchase_id: str, status: PurchaseStatus,
                 counts: dict[str, int], reason: str) -> str:
    async def close(uow: UnitOfWork) -> tuple[bool, int]:
        held = int(await uow.conn.scalar(
            select(func.count()).select_from(reservations).where(
                reservations.c.purchase_id == purchase_id, reservations.c.state == "held")
        ) or 0)
        row = await close_pending_in(uow.conn, purchase_id, status, reason=reason)
        return row is not None, held

    closed, held = await ctx.db.transaction(close)
    if not closed:
        return "none"  # a webhook, a cancel or another reconciler got there first
    counts["released"] += held
    return status.value  # the count of closes in that state


async def _defer(ctx: AppContext, row: Any, now: datetime, why: str) -> None:
    attempts = int(row.check_attempts) + 1
    delay = backoff_seconds(attempts)
    log.warning("purchase %s: provider unreachable (%s); next look in %gs", row.id, why, delay)

    await ctx.db.transaction(lambda uow: uow.conn.execute(
        update(purchases)
        .where(purchases.c.id == row.id, purchases.c.status == PurchaseStatus.PENDING)
        .values(check_attempts=purchases.c.check_attempts + 1,
                next_check_at=now + timedelta(seconds=delay))))


# ---- 2. holds past expiry -----------------------------------------------------------------

async def _orphan_holds(ctx: AppContext, counts: dict[str, int], _age: float) -> None:
    """Release expired holds whose purchase is not pending (pending ones are step 1's,
    because only the provider can say whether the buyer paid at the last second)."""
    async def release(uow: UnitOfWork) -> int:
        now = utcnow()
        rows = (await uow.conn.execute(
            select(purchases)
            .join(reservations, reservations.c.purchase_id == purchases.c.id)
            .where(reservations.c.state == "held", reservations.c.expires_at < now,
                   purchases.c.status != PurchaseStatus.PENDING)
            .distinct().limit(BATCH)
        )).all()
        released = 0
        for row in rows:
            before = await uow.conn.scalar(select(func.count()).select_from(reservations).where(
                reservations.c.purchase_id == row.id, reservations.c.state == "held"))
            await release_holds(uow.conn, row, now)
            after = await uow.conn.scalar(select(func.count()).select_from(reservations).where(
                reservations.c.purchase_id == row.id, reservations.c.state == "held"))
            released += int(before or 0) - int(after or 0)
        return released

    counts["released"] += await ctx.db.transaction(release)


# ---- 3. dead idempotency keys -------------------------------------------------------------

async def _dead_keys(ctx: AppContext, counts: dict[str, int], _age: float) -> None:
    settings = ctx.settings
    async with ctx.db.read() as uow:
        keys = await idem.find_abandoned(uow.conn, utcnow(), settings.idempotency_lock_timeout,
                                         settings.holder_lease, limit=BATCH)
    for key in keys:
        purchase = None
        # Only a checkout is finished from its purchase; any other kind of request (a
        # wallet purchase commits its effects and its answer together) is rolled back.
        if key.purchase_id is not None and key.operation == CHECKOUT_OPERATION:
            async with ctx.db.read() as uow:
                purchase = (await uow.conn.execute(
                    select(purchases).where(purchases.c.id == key.purchase_id))).first()
        if purchase is None:
            await _drop_key(ctx, key, counts)
        elif purchase.provider_session_id is not None:
            await _complete_key(ctx, key, session_payload(purchase, existing=False), counts)
        elif purchase.status != PurchaseStatus.PENDING:
            await _drop_key(ctx, key, counts)
        # else: pending without a session: step 1 records it, a later run finishes the key.


async def _complete_key(ctx: AppContext, key: idem.AbandonedKey, payload: dict[str, Any],
                        counts: dict[str, int]) -> None:
    # The 201 the request would have returned, in the API's own encoding
    # (idempotency.responses), so a replay is byte-identical to what a retry would produce.
    response = json_response(payload, 201)
    settings = ctx.settings
    completed = await ctx.db.transaction(lambda uow: idem.complete_abandoned(
        uow.conn, key, response, utcnow(), settings.idempotency_lock_timeout,
        settings.holder_lease))
    counts["keys_completed"] += int(completed)


async def _drop_key(ctx: AppContext, key: idem.AbandonedKey, counts: dict[str, int]) -> None:
    settings = ctx.settings
    dropped = await ctx.db.transaction(lambda uow: idem.drop_abandoned(
        uow.conn, key, utcnow(), settings.idempotency_lock_timeout, settings.holder_lease))
    counts["keys_rolled_back"] += int(dropped)


# ---- 4-6. refunds, outbox, purges ---------------------------------------------------------

async def _refunds(ctx: AppContext, counts: dict[str, int], _age: float) -> None:
    async with ctx.db.read() as uow:
        ids = (await uow.conn.execute(
            select(purchases.c.id).where(purchases.c.refund_status == "pending").limit(BATCH)
        )).scalars().all()
    for purchase_id in ids:
        if await send_pending_refund(ctx, purchase_id):
            counts["refunds_sent"] += 1


async def _outbox(ctx: AppContext, counts: dict[str, int], _age: float) -> None:
    result = await ctx.outbox.run_once()
    counts["outbox_sent"] += int(result["sent"])
    counts["outbox_failed"] += int(result["failed"]) + int(result["dead"])


async def _purge(ctx: AppContext, counts: dict[str, int], _age: float) -> None:
    async def purge(uow: UnitOfWork) -> tuple[int, int]:
        now = utcnow()
        keys = await reap_expired(uow.conn, now)
        inbox = await purge_older_than(uow.conn, INBOX_RETENTION, now)
        return keys, inbox

    counts["purged_keys"], counts["purged_inbox"] = await ctx.db.transaction(purge)
    counts["purged_leases"] = int(await ctx.locks.clean_expired())
