"""Wallet purchases and admin wallet adjustments applied as one set, in the caller's
transaction, with a constant number of statements whatever the number of commands.

    results = await apply_wallet_commands(conn, settings, [WalletPurchase(...), ...], now)

Each result is the command's response payload, or the ``PayguardError`` it would have
raised alone (``NOT_FOUND``, ``VALIDATION_ERROR``, ``OUT_OF_STOCK``,
``INSUFFICIENT_BALANCE``, with the same words). A refused command writes nothing and
costs the others nothing. The steps, in the global lock order of ``store.lock_order``:

 1. read the products and the adjusted users (two reads); create missing wallets of
    adjusted users (one insert)
 2. lock the wallets, in id order (one statement)
 3. lock the stock counters, in key order (one statement)
 4. decide every command in arrival order, in Python, against the locked values: one
    wallet many times in a batch sees each earlier debit
 5. pick the accepted purchases' stock items (one statement, ``SKIP LOCKED`` on
    PostgreSQL) and assign them (one statement); one increment per stock counter and the
    reservations (two statements)
 6. the ledger (``TransferBatch.write``): one net change for all wallets, one for the
    platform accounts (the revenue account is credited once per batch), transfers and
    entries with multi-row inserts, each ``balance_after`` in order
 7. one block of order numbers and one of receipt numbers for the accepted purchases only
    (two statements, the counters taken last), then the purchases and receipts (two)

The single-command entry points (``purchase_with_wallet``, ``wallets.adjust``) run this
same code with a batch of one, so a lone request and a batched one cannot disagree.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import case, select, union_all, update
from sqlalchemy.ext.asyncio import AsyncConnection

from payguard import capacity, ledger, sequences
from payguard.clock import isoformat
from payguard.config import Settings
from payguard.errors import (
    InsufficientBalance,
    NotFound,
    OutOfStock,
    PayguardError,
    ValidationFailed,
)
from payguard.ids import new_id
from payguard.service.catalog import stock_capacity_key
from payguard.service.numbers import ORDER_SERIES, RECEIPT_SERIES
from payguard.service.records import PurchaseRecord
from payguard.service.views import purchase_view
from payguard.states import PurchaseStatus
from payguard.store.lock_order import lock_accounts, lock_capacities
from payguard.store.prepared import Query, in_list, insert_rows_then, is_postgresql, pg_fetch
from payguard.store.schema import PRIMITIVES, products, purchases, receipts, stock_items, users

__all__ = [
    "WalletAdjustment",
    "WalletCommand",
    "WalletPurchase",
    "WalletResult",
    "apply_wallet_commands",
    "pick_items",
]


@dataclass(frozen=True, slots=True)
class WalletPurchase:
    """``POST /api/purchases``: pay ``quantity`` items of a product from the wallet."""

    user_id: str
    product_id: str
    quantity: int


@dataclass(frozen=True, slots=True)
class WalletAdjustment:
    """``POST /api/admin/wallets/{user_id}/adjustments``: ``amount`` or ``set_balance``."""

    user_id: str
    currency: str
    amount: int | None
    set_balance: int | None
    reason: str


WalletCommand = WalletPurchase | WalletAdjustment
WalletResult = dict[str, Any] | PayguardError


@dataclass(slots=True)
class _Accepted:
    index: int
    command: WalletPurchase
    product: _Product
    purchase_id: str
    amount: int


@dataclass(frozen=True, slots=True)
class _Product:
    """What a purchase needs of a product (its row never changes once created)."""

    id: str
    sku: str
    price: int
    currency: str


# (The service's own table: the tables argument, for the primitives' prefix, is unused.)
_PRODUCTS = Query("batch_products", lambda d, _t: select(products).where(
    in_list(d, products.c.id, "ids")))


# A product never changes once created (no endpoint updates or deletes one: sku, price and
# currency are fixed), so each process keeps the rows it has read, bounded: one statement
# fewer in most batches. A product not found is not remembered (it may be created later).
_KNOWN_PRODUCTS: dict[str, _Product] = {}
_KNOWN_PRODUCTS_MAX = 10_000


async def _products(conn: AsyncConnection, ids: set[str]) -> dict[str, _Product]:
    missing = sorted(i for i in ids if i not in _KNOWN_PRODUCTS)
    if missing:
        if len(_KNOWN_PRODUCTS) + len(missing) > _KNOWN_PRODUCTS_MAX:
            _KNOWN_PRODUCTS.clear()
        for r in await _PRODUCTS.fetch(conn, PRIMITIVES, ids=missing):
            _KNOWN_PRODUCTS[r["id"]] = _Product(r["id"], r["sku"], int(r["price"]),
                                                r["currency"])
    return {i: _KNOWN_PRODUCTS[i] for i in ids if i in _KNOWN_PRODUCTS}


async def pick_items(conn: AsyncConnection, needs: dict[str, int]) -> dict[str, list[Any]]:
    """``{product_id: [(id, value), ...]}``: the lowest free items of each product, in one
    statement. ``SKIP LOCKED`` lets concurrent buyers take different rows instead of
    queueing on the same first free one; the stock counters (locked by the caller)
    guarantee enough unlocked rows exist."""
    if not needs:
        return {}
    out: dict[str, list[Any]] = {p: [] for p in needs}
    if is_postgresql(conn):
        wanted = sorted(needs)
        rows = await pg_fetch(conn, _PG_PICK, wanted, [needs[p] for p in wanted])
        for r in rows:
            out[r["product_id"]].append((int(r["id"]), r["value"]))
    else:
        parts = []
        for product_id, n in sorted(needs.items()):
            part = (select(stock_items.c.id, stock_items.c.product_id, stock_items.c.value)
                    .where(stock_items.c.product_id == product_id,
                           stock_items.c.state == "available")
                    .order_by(stock_items.c.id).limit(n))
            parts.append(select(part.subquery()))
        stmt = parts[0] if len(parts) == 1 else union_all(*parts)
        for row in await conn.execute(stmt):
            out[row.product_id].append((int(row.id), row.value))
    for found in out.values():
        found.sort()
    return out


# The lowest free items of each product, any number of products, one SQL text.
_PG_PICK = (
    "SELECT s.id, s.product_id, s.value "
    "FROM unnest($1::VARCHAR(40)[], $2::INTEGER[]) AS n(product_id, wanted) "
    "CROSS JOIN LATERAL (SELECT i.id, i.product_id, i.value FROM stock_items AS i "
    "WHERE i.product_id = n.product_id AND i.state = 'available' "
    "ORDER BY i.id LIMIT n.wanted FOR UPDATE SKIP LOCKED) AS s"
)

# Hand each picked item to its purchase, one SQL text whatever the number of items.
_PG_ASSIGN = (
    "UPDATE stock_items AS i SET state = 'assigned', assigned_at = $3, "
    "purchase_id = v.purchase_id "
    "FROM unnest($1::BIGINT[], $2::VARCHAR(40)[]) AS v(id, purchase_id) "
    "WHERE i.id = v.id AND i.state = 'available' RETURNING i.id"
)


async def _assign(conn: AsyncConnection, accepted: list[_Accepted], now: datetime
                  ) -> dict[str, list[str]]:
    """Give each accepted purchase its items (lowest ids to the earliest command)."""
    needs: dict[str, int] = {}
    for a in accepted:
        needs[a.command.product_id] = needs.get(a.command.product_id, 0) + a.command.quantity
    free = await pick_items(conn, needs)
    owner: dict[int, str] = {}
    values: dict[str, list[str]] = {}
    for a in accepted:
        mine = free[a.command.product_id][:a.command.quantity]
        del free[a.command.product_id][:a.command.quantity]
        if len(mine) < a.command.quantity:  # pragma: no cover - the counter said yes
            raise OutOfStock("stock changed under the batch")
        owner.update({item_id: a.purchase_id for item_id, _v in mine})
        values[a.purchase_id] = [v for _i, v in mine]
    if owner:
        if is_postgresql(conn):
            ids = list(owner)
            assigned = [r["id"] for r in await pg_fetch(
                conn, _PG_ASSIGN, ids, [owner[i] for i in ids], now)]
        else:
            assigned = list((await conn.execute(
                update(stock_items)
                .where(stock_items.c.id.in_(list(owner)), stock_items.c.state == "available")
                .values(state="assigned", assigned_at=now,
                        purchase_id=case(owner, value=stock_items.c.id))
                .returning(stock_items.c.id)
            )).scalars().all())
        if len(assigned) != len(owner):  # pragma: no cover - rows were locked or exclusive
            raise OutOfStock("stock changed under the batch")
    return values


async def apply_wallet_commands(conn: AsyncConnection, settings: Settings | None,
                                commands: list[WalletCommand], now: datetime
                                ) -> list[WalletResult]:
    """Apply ``commands`` in order inside the caller's transaction; never commits.
    ``settings`` (number formats, maximum amount) may be None when there are no purchases.
    """
    results: list[WalletResult | None] = [None] * len(commands)
    buys = [(i, c) for i, c in enumerate(commands) if isinstance(c, WalletPurchase)]
    if buys and settings is None:
        raise ValueError("purchases need the settings")
    adjusts = [(i, c) for i, c in enumerate(commands) if isinstance(c, WalletAdjustment)]

    catalog: dict[str, _Product] = {}
    if buys:
        catalog = await _products(conn, {c.product_id for _i, c in buys})
    known_users: set[str] = set()
    if adjusts:
        known_users = set((await conn.execute(
            select(users.c.id).where(users.c.id.in_(sorted({c.user_id for _i, c in adjusts})))
        )).scalars())
        await ledger.ensure_wallets(conn, [(c.user_id, c.currency) for _i, c in adjusts
                                           if c.user_id in known_users], now)

    wallets = {ledger.wallet_account_id(c.user_id, catalog[c.product_id].currency)
               for _i, c in buys if c.product_id in catalog}
    wallets |= {ledger.wallet_account_id(c.user_id, c.currency)
                for _i, c in adjusts if c.user_id in known_users}
    book = ledger.TransferBatch(await lock_accounts(conn, wallets), now=now)
    stock = {k: limit - taken for k, (limit, taken) in (await lock_capacities(
        conn, {stock_capacity_key(c.product_id) for _i, c in buys if c.product_id in catalog}
    )).items()}

    accepted: list[_Accepted] = []
    adjusted: dict[int, tuple[WalletAdjustment, int, ledger.PlannedTransfer | None]] = {}
    for i, command in enumerate(commands):
        try:
            if isinstance(command, WalletPurchase):
                assert settings is not None
                accepted.append(_decide_purchase(i, command, catalog, stock, book, settings))
            else:
                adjusted[i] = _decide_adjustment(command, known_users, book)
        except PayguardError as exc:
            results[i] = exc

    items = await _assign(conn, accepted, now)
    await capacity.reserve_many(conn, [
        (stock_capacity_key(a.command.product_id), a.purchase_id, a.command.quantity)
        for a in accepted], keep_now=True, now=now)
    written = {t.id: t for t in await book.write(conn)}

    if accepted:
        assert settings is not None
        period = str(now.year)
        firsts = await sequences.next_blocks(
            conn, period, [(ORDER_SERIES, len(accepted)), (RECEIPT_SERIES, len(accepted))])
        first_order, first_receipt = firsts[ORDER_SERIES], firsts[RECEIPT_SERIES]
        rows_out: list[dict[str, Any]] = []
        for n, a in enumerate(accepted):
            receipt_seq = first_receipt + n
            values: dict[str, Any] = dict(
                id=a.purchase_id, user_id=a.command.user_id,
                order_number=sequences.format_number(settings.order_format, at=now,
                                                     seq=first_order + n),
                kind="product", status=PurchaseStatus.COMPLETED, payment_method="wallet",
                item_key=f"product:{a.command.product_id}", product_id=a.command.product_id,
                program_id=None, quantity=a.command.quantity, amount=a.amount,
                currency=a.product.currency, full_price=a.amount, class_rep_discount=0,
                early_bird_discount=0, is_class_rep=False,
                receipt_number=sequences.format_number(settings.receipt_format, at=now,
                                                       seq=receipt_seq),
                created_at=now, updated_at=now, completed_at=now,
            )
            rows_out.append(values)
            results[a.index] = purchase_view(PurchaseRecord(**values), items[a.purchase_id])
        await insert_rows_then(conn, purchases, rows_out, receipts, [
            {"number": v["receipt_number"], "series": RECEIPT_SERIES, "period": period,
             "seq": first_receipt + n, "purchase_id": v["id"], "amount": v["amount"],
             "currency": v["currency"], "issued_at": now}
            for n, v in enumerate(rows_out)
        ])

    for i, (command, balance, planned) in adjusted.items():
        entry: dict[str, Any] | None = None
        if planned is not None:
            t = written[planned.id]
            credit = planned.credit == ledger.wallet_account_id(command.user_id,
                                                                command.currency)
            entry = {
                "id": str(t.credit_entry_id if credit else t.debit_entry_id),
                "amount": planned.amount if credit else -planned.amount,
                "balance_after": balance, "kind": "adjustment", "purchase_id": None,
                "reason": command.reason, "created_at": isoformat(now),
            }
        results[i] = {"balance": balance, "currency": command.currency, "entry": entry}
    assert all(r is not None for r in results)
    return [r for r in results if r is not None]


def _decide_purchase(i: int, command: WalletPurchase, catalog: dict[str, _Product],
                     stock: dict[str, int], book: ledger.TransferBatch,
                     settings: Settings) -> _Accepted:
    """Check one purchase against the batch's running state; raise what it would alone."""
    product = catalog.get(command.product_id)
    if product is None:
        raise NotFound(f"no product {command.product_id!r}")
    amount = int(product.price) * command.quantity
    if amount > settings.max_amount:
        raise ValidationFailed(
            f"amount {amount} exceeds the maximum of {settings.max_amount}",
            errors=[{"loc": ["body", "quantity"], "msg": "total above PAYGUARD_MAX_AMOUNT"}],
        )
    key = stock_capacity_key(command.product_id)
    # Stock is checked before the balance, as a lone purchase does.
    if stock.get(key, 0) < command.quantity:
        raise OutOfStock(f"fewer than {command.quantity} items of {product.sku} left")
    purchase_id = new_id("pur")
    if amount > 0:
        book.plan(debit=ledger.wallet_account_id(command.user_id, product.currency),
                  credit=ledger.platform_account_id("revenue", product.currency),
                  amount=amount, currency=product.currency, kind="purchase",
                  purchase_id=purchase_id, reason=f"{command.quantity} x {product.sku}")
    stock[key] -= command.quantity
    return _Accepted(i, command, product, purchase_id, amount)


def _decide_adjustment(command: WalletAdjustment, known_users: set[str],
                       book: ledger.TransferBatch
                       ) -> tuple[WalletAdjustment, int, ledger.PlannedTransfer | None]:
    """Check one adjustment; returns it with the wallet's balance after it."""
    if command.user_id not in known_users:
        raise NotFound(f"no user {command.user_id!r}")
    wallet = ledger.wallet_account_id(command.user_id, command.currency)
    funding = ledger.platform_account_id("funding", command.currency)
    if command.set_balance is not None:
        delta = command.set_balance - book.balance(wallet)
    else:
        assert command.amount is not None
        delta = command.amount
    planned = None
    if delta != 0:
        debit, credit = (funding, wallet) if delta > 0 else (wallet, funding)
        try:
            planned = book.plan(debit=debit, credit=credit, amount=abs(delta),
                                currency=command.currency, kind="adjustment",
                                reason=command.reason)
        except InsufficientBalance as exc:
            raise InsufficientBalance(
                f"an adjustment of {delta} would take the wallet below zero"
            ) from exc
    return command, book.balance(wallet), planned
