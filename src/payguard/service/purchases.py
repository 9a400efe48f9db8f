"""Wallet purchases of digital goods, purchase queries, receipts and wallet refunds."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from payguard.clock import utcnow
from payguard.config import Settings
from payguard.errors import NotFound, OutOfStock, PayguardError
from payguard.service.principal import Principal
from payguard.service.records import PurchaseRecord
from payguard.service.views import purchase_view, receipt_view
from payguard.service.wallet_batch import WalletPurchase, apply_wallet_commands
from payguard.states import PurchaseStatus
from payguard.store.schema import purchases, receipts, stock_items

__all__ = [
    "assign_items",
    "get_purchase",
    "get_receipt",
    "items_of",
    "list_purchases",
    "load_purchase",
    "purchase_with_wallet",
]


async def assign_items(conn: AsyncConnection, product_id: str, purchase_id: str,
                       quantity: int, *, state: str = "assigned") -> list[str]:
    """Hand ``quantity`` free items to a purchase (the capacity counter already said yes).

    ``SKIP LOCKED`` lets concurrent buyers take different rows instead of queueing on the
    same first free one; the capacity counter guarantees enough unlocked rows exist.
    """
    free = (
        select(stock_items.c.id)
        .where(stock_items.c.product_id == product_id, stock_items.c.state == "available")
        .order_by(stock_items.c.id)
        .limit(quantity)
    )
    if conn.dialect.name == "postgresql":
        free = free.with_for_update(skip_locked=True)
    ids = list((await conn.execute(free)).scalars())
    if len(ids) < quantity:
        raise OutOfStock(f"only {len(ids)} items left")
    rows = (await conn.execute(
        update(stock_items)
        .where(stock_items.c.id.in_(ids), stock_items.c.state == "available")
        .values(state=state, purchase_id=purchase_id,
                assigned_at=utcnow() if state == "assigned" else None)
        .returning(stock_items.c.id, stock_items.c.value)
    )).all()
    if len(rows) != quantity:  # pragma: no cover - guarded by the capacity counter
        raise OutOfStock("stock changed under the purchase")
    return [r.value for r in sorted(rows, key=lambda r: r.id)]


async def purchase_with_wallet(conn: AsyncConnection, settings: Settings, user: Principal, *,
                               product_id: str, quantity: int) -> dict[str, Any]:
    """Debit the wallet, assign items, number the order and the receipt: all or nothing.

    A batch of one through the group-commit code (``service.wallet_batch``), so a lone
    purchase and a batched one take the same rows in the same order and answer alike.
    """
    assert user.user_id is not None
    (result,) = await apply_wallet_commands(
        conn, settings, [WalletPurchase(user.user_id, product_id, quantity)], utcnow())
    if isinstance(result, PayguardError):
        raise result
    return result


def _columns(record: PurchaseRecord) -> dict[str, Any]:
    """The record as an insert's values; a None is left to the column's NULL."""
    values = {name: getattr(record, name) for name in purchases.c.keys()}
    return {name: value for name, value in values.items() if value is not None}


async def items_of(conn: AsyncConnection, purchase_ids: list[str]) -> dict[str, list[str]]:
    if not purchase_ids:
        return {}
    rows = await conn.execute(
        select(stock_items.c.purchase_id, stock_items.c.value)
        .where(stock_items.c.purchase_id.in_(purchase_ids), stock_items.c.state == "assigned")
        .order_by(stock_items.c.id)
    )
    out: dict[str, list[str]] = {}
    for r in rows:
        out.setdefault(r.purchase_id, []).append(r.value)
    return out


async def get_purchase(conn: AsyncConnection, who: Principal, purchase_id: str) -> dict[str, Any]:
    """A purchase the caller may see; another user's purchase is NOT_FOUND, never 403."""
    query = select(purchases).where(purchases.c.id == purchase_id)
    if not who.is_admin:
        query = query.where(purchases.c.user_id == who.user_id)
    return await _view_one(conn, query, purchase_id)


async def load_purchase(conn: AsyncConnection, purchase_id: str) -> dict[str, Any]:
    """Any purchase, for payguard's own use (emails, refunds): no caller to check."""
    return await _view_one(conn, select(purchases).where(purchases.c.id == purchase_id),
                           purchase_id)


async def _view_one(conn: AsyncConnection, query: Any, purchase_id: str) -> dict[str, Any]:
    row = (await conn.execute(query)).first()
    if row is None:
        raise NotFound(f"no purchase {purchase_id!r}")
    return purchase_view(PurchaseRecord.from_row(row),
                         (await items_of(conn, [row.id])).get(row.id, []))


async def list_purchases(conn: AsyncConnection, who: Principal, *,
                         status: PurchaseStatus | None,
                         limit: int = 100) -> list[dict[str, Any]]:
    query = select(purchases).order_by(purchases.c.created_at.desc(), purchases.c.id).limit(limit)
    if not who.is_admin:
        query = query.where(purchases.c.user_id == who.user_id)
    if status:
        query = query.where(purchases.c.status == status)
    rows = (await conn.execute(query)).all()
    items = await items_of(conn, [r.id for r in rows])
    return [purchase_view(PurchaseRecord.from_row(r), items.get(r.id, [])) for r in rows]


async def get_receipt(conn: AsyncConnection, who: Principal, number: str) -> dict[str, Any]:
    query = select(receipts).join(purchases, purchases.c.id == receipts.c.purchase_id).where(
        receipts.c.number == number
    )
    if not who.is_admin:
        query = query.where(purchases.c.user_id == who.user_id)
    row = (await conn.execute(query)).first()
    if row is None:
        raise NotFound(f"no receipt {number!r}")
    return receipt_view(row)
