"""A user cancels their pending checkout: the session is expired, the holds released."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from payguard.errors import InvalidState, NotFound
from payguard.idempotency import outbound_key
from payguard.service.context import AppContext
from payguard.service.lifecycle import close_pending_in, fulfil
from payguard.service.principal import Principal
from payguard.service.purchases import get_purchase
from payguard.store.schema import purchases
from payguard.store.uow import UnitOfWork

__all__ = ["cancel_purchase"]


async def cancel_purchase(ctx: AppContext, user: Principal, purchase_id: str) -> dict[str, Any]:
    async with ctx.db.unit_of_work(readonly=True) as uow:
        row = (await uow.conn.execute(select(purchases).where(
            purchases.c.id == purchase_id, purchases.c.user_id == user.user_id))).first()
    if row is None:
        raise NotFound(f"no purchase {purchase_id!r}")
    if row.status != "pending":
        raise InvalidState(f"purchase is {row.status}; only pending purchases can be canceled")
    if row.provider_session_id:
        # Expire at the provider first, so the session can no longer be paid; if it was
        # paid already, complete it instead of pretending it was canceled.
        session = await ctx.provider.expire_checkout_session(
            row.provider_session_id, idempotency_key=outbound_key(row.id, "expire"))
        if session.is_paid:
            await fulfil(ctx, row.id, session)
            raise InvalidState("the purchase was paid before it could be canceled")

    async def tx(uow: UnitOfWork) -> dict[str, Any]:
        closed = await close_pending_in(uow, purchase_id, "canceled",
                                        reason="canceled by the user", user_id=user.user_id)
        if closed is None:
            raise InvalidState("the purchase is no longer pending")
        view = await get_purchase(uow.conn, user, purchase_id)
        await uow.commit()
        return view

    return await ctx.db.run(tx)
