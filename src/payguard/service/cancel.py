"""A user cancels their pending checkout: holds released, then the session expired.

The purchase is closed first, in one conditional transaction, and the provider session is
expired after. The other order loses a race: expiring at the provider makes it send
``checkout.session.expired``, whose webhook could close the purchase as "expired" before
the cancel did, and both duplicate cancels would then answer 409. If the session turns out
to have been paid meanwhile, the payment is applied like any late payment (the seat is
re-taken if still free, else the payment is refunded).
"""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy import select

from payguard.clock import utcnow
from payguard.errors import InvalidState, ProviderUnavailable, RequestInProgress
from payguard.idempotency import Claim, outbound_key
from payguard.idempotency import store as idem
from payguard.service.context import AppContext
from payguard.service.lifecycle import close_pending_in, fulfil
from payguard.service.principal import Principal
from payguard.service.purchases import get_purchase
from payguard.states import PurchaseStatus
from payguard.store.schema import purchases
from payguard.store.uow import UnitOfWork

__all__ = ["cancel_purchase"]

log = logging.getLogger("payguard.cancel")

#: The recovery point recorded on the claim once this request closed the purchase.
CANCELED = "canceled"


async def cancel_purchase(ctx: AppContext, user: Principal, purchase_id: str,
                          claim: Claim | None = None) -> dict[str, Any]:
    """Cancel, recording the recovery point ``canceled`` on the request's idempotency claim
    in the closing transaction: a retry of a cancel that died after closing resumes after
    the close and answers 200, instead of finding the purchase closed and answering 409."""
    async def close(uow: UnitOfWork) -> Any:
        view = await get_purchase(uow.conn, user, purchase_id)  # NOT_FOUND for others' ids
        closed = await close_pending_in(uow.conn, purchase_id, PurchaseStatus.CANCELED,
                                        reason="canceled by the user", user_id=user.user_id)
        if closed is None:
            raise InvalidState(
                f"purchase is {view['status']}; only pending purchases can be canceled")
        if claim is not None and not await idem.advance(uow.conn, claim, CANCELED, utcnow(),
                                                        purchase_id=purchase_id):
            raise RequestInProgress("this request's claim was taken over by a retry")
        return closed

    if claim is not None and claim.recovery_point == CANCELED:
        async with ctx.db.read() as uow:
            closed = (await uow.conn.execute(
                select(purchases).where(purchases.c.id == purchase_id))).one()
    else:
        closed = await ctx.db.transaction(close)
    if closed.provider_session_id:
        try:
            session = await ctx.provider.expire_checkout_session(
                closed.provider_session_id, idempotency_key=outbound_key(closed.id, "expire"))
        except ProviderUnavailable:
            # Canceled here; if the session is paid before it expires at the provider, the
            # webhook or the reconciler applies it as a late payment.
            log.warning("purchase %s canceled, but expiring its session failed", closed.id)
        else:
            if session.is_paid:
                await fulfil(ctx, closed.id, session)
                raise InvalidState("the purchase was paid before it could be canceled")
    async with ctx.db.read() as uow:
        return await get_purchase(uow.conn, user, purchase_id)


