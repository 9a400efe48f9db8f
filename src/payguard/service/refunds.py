"""Admin refunds of completed purchases, wallet or card, booked once.

One conditional update (completed -> refunded) decides which of several concurrent refunds
wins; the same transaction reverses the money in the ledger and releases a class-rep seat.
A card refund is then sent to the provider outside the transaction (``refund_status``
stays ``pending`` until the provider confirms; the reconciler retries it). Digital items
already delivered stay with the buyer.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import case, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from payguard import capacity, ledger
from payguard.clock import utcnow
from payguard.errors import InvalidState, NotFound
from payguard.service.catalog import program_capacity_key
from payguard.service.context import AppContext
from payguard.service.lifecycle import send_pending_refund
from payguard.service.purchases import load_purchase
from payguard.states import PurchaseStatus
from payguard.store.lock_order import lock_shared_rows
from payguard.store.schema import purchases

__all__ = ["book_refund", "refund_card_purchase", "refund_wallet_purchase", "refunds_by_card"]


async def refunds_by_card(conn: AsyncConnection, purchase_id: str) -> bool:
    """Whether refunding this purchase goes through the provider (a card payment, booked
    then sent: ``refund_card_purchase``) or stays local (``refund_wallet_purchase``, one
    transaction). An unknown purchase is local: booking it answers NOT_FOUND."""
    method = await conn.scalar(
        select(purchases.c.payment_method).where(purchases.c.id == purchase_id))
    return method == "card"


async def book_refund(conn: AsyncConnection, purchase_id: str, reason: str) -> Any:
    """completed -> refunded in the caller's transaction, once; the money goes back to
    where it came from (the wallet, or the card through the provider afterwards)."""
    now = utcnow()
    is_card = purchases.c.payment_method == "card"
    row = (await conn.execute(
        update(purchases)
        .where(purchases.c.id == purchase_id, purchases.c.status == PurchaseStatus.COMPLETED)
        .values(status=PurchaseStatus.REFUNDED, refunded_at=now, updated_at=now,
                refund_status=case((is_card, "pending"), else_=None),
                failure_reason=case((is_card, reason), else_=purchases.c.failure_reason))
        .returning(*purchases.c)
    )).first()
    if row is None:
        current = await conn.scalar(select(purchases.c.status).where(purchases.c.id == purchase_id))
        if current is None:
            raise NotFound(f"no purchase {purchase_id!r}")
        raise InvalidState(f"purchase is {current}; only completed purchases can be refunded")
    amount, currency = int(row.amount), row.currency
    wallet = ledger.wallet_account_id(row.user_id, currency)
    # Where the money went on purchase, and where it came from.
    source = wallet if row.kind == "topup" else ledger.platform_account_id("revenue", currency)
    target = wallet if row.payment_method == "wallet" else ledger.platform_account_id(
        "card", currency)
    # The global lock order (store.lock_order): wallet, seat counter, platform accounts.
    await lock_shared_rows(conn, account_ids=(source, target), capacity_keys=(
        [program_capacity_key(row.program_id)] if row.program_id else []))
    if row.program_id:
        # The seat before the ledger rows, as the lock order above has them.
        await capacity.release(conn, program_capacity_key(row.program_id), row.id, now)
    if amount > 0:
        # A top-up refund takes the money back out of the wallet: refused if it was spent.
        await ledger.transfer(conn, debit=source, credit=target, amount=amount,
                              currency=currency, kind="refund", purchase_id=row.id,
                              reason=reason, now=now)
    return row


async def refund_wallet_purchase(conn: AsyncConnection, purchase_id: str,
                                 reason: str) -> dict[str, Any]:
    """Book the refund of a wallet purchase and return the purchase, in one transaction."""
    await book_refund(conn, purchase_id, reason)
    return await load_purchase(conn, purchase_id)


async def refund_card_purchase(ctx: AppContext, purchase_id: str, reason: str) -> dict[str, Any]:
    """Book the refund, then send it to the provider (never inside the transaction)."""
    await ctx.db.transaction(lambda uow: book_refund(uow.conn, purchase_id, reason))
    await send_pending_refund(ctx, purchase_id)
    async with ctx.db.read() as uow:
        return await load_purchase(uow.conn, purchase_id)
