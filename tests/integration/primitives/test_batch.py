"""Batch-form primitives and the set-based wallet commands, on SQLite and PostgreSQL.

One wallet many times in a batch, a batch where every command fails, a mixed batch that
answers exactly as the same commands one by one, a constant statement count whatever the
batch size, key claims in bulk, and number blocks that a rollback hands back.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pytest
from sqlalchemy import event, func, select

from payguard import sequences
from payguard.clock import utcnow
from payguard.config import Settings
from payguard.errors import PayguardError
from payguard.idempotency import StoredResponse
from payguard.idempotency import store as keys
from payguard.service import catalog, users, wallets
from payguard.service.audit import run_audit
from payguard.service.numbers import ORDER_SERIES, RECEIPT_SERIES
from payguard.service.principal import Principal
from payguard.service.purchases import purchase_with_wallet
from payguard.service.wallet_batch import (
    WalletAdjustment,
    WalletCommand,
    WalletPurchase,
    WalletResult,
    apply_wallet_commands,
)
from payguard.store import prepared
from payguard.store.schema import (
    accounts,
    capacities,
    entries,
    purchases,
    receipts,
    reservations,
    transfers,
)
from payguard.store.uow import Database, UnitOfWork
from tests.support.db import uncommitted

PRICE = 250
SETTINGS = Settings()


async def _user(db: Database, balance: int, n: int = 0) -> str:
    async def tx(uow: UnitOfWork) -> str:
        user = await users.create_user(uow.conn, email=f"u{n}-{utcnow().timestamp()}@t.test",
                                       name=None, currency="USD")
        if balance:
            await wallets.adjust(uow.conn, user_id=user["id"], currency="USD", amount=balance,
                                 set_balance=None, reason="seed")
        return str(user["id"])

    return await db.transaction(tx)


async def _product(db: Database, items: int, price: int = PRICE, sku: str = "sku") -> str:
    async def tx(uow: UnitOfWork) -> str:
        product = await catalog.create_product(
            uow.conn, sku=f"{sku}-{utcnow().timestamp()}", name="thing", price=price,
            currency="USD", items=[f"key-{i}" for i in range(items)])
        return str(product["id"])

    return await db.transaction(tx)


async def _apply(db: Database, commands: list[WalletCommand],
                 now: datetime | None = None) -> list[WalletResult]:
    return await db.transaction(
        lambda uow: apply_wallet_commands(uow.conn, SETTINGS, commands, now or utcnow()))


def _code(result: WalletResult) -> str:
    return result.code if isinstance(result, PayguardError) else "ok"


async def _audit(db: Database) -> None:
    async with db.read() as uow:
        report = await run_audit(uow.conn)
    assert report["ok"], report["problems"]


async def test_one_wallet_many_times_in_one_batch(database: Database) -> None:
    user = await _user(database, 6 * PRICE)
    product = await _product(database, 20)
    buy = WalletPurchase(user, product, 1)
    top_up = WalletAdjustment(user, "USD", PRICE, None, "mid-batch top-up")
    commands: list[WalletCommand] = [buy] * 7 + [top_up, buy, buy]
    results = await _apply(database, commands)

    assert [_code(r) for r in results] == (
        ["ok"] * 6 + ["INSUFFICIENT_BALANCE", "ok", "ok", "INSUFFICIENT_BALANCE"])
    bought = [r for r, c in zip(results, commands, strict=True)
              if isinstance(c, WalletPurchase) and isinstance(r, dict)]
    receipt_seqs = [int(r["receipt_number"][-6:]) for r in bought]
    order_seqs = [int(r["order_number"][-6:]) for r in bought]
    assert receipt_seqs == order_seqs == list(range(1, 8))  # one block, arrival order
    assert [r["items"] for r in bought] == [[f"key-{i}"] for i in range(7)]
    adjusted = results[7]
    assert isinstance(adjusted, dict)
    assert adjusted["balance"] == PRICE and adjusted["entry"]["balance_after"] == PRICE

    wallet = f"wal_{user}_USD"
    async with database.read() as uow:
        rows = (await uow.conn.execute(
            select(entries.c.amount, entries.c.balance_after)
            .where(entries.c.account_id == wallet).order_by(entries.c.id))).all()
        revenue = (await uow.conn.execute(
            select(entries.c.balance_after).where(entries.c.account_id == "plt_revenue_USD")
            .order_by(entries.c.id))).scalars().all()
        balance = await uow.conn.scalar(select(accounts.c.balance)
                                        .where(accounts.c.id == wallet))
        taken = await uow.conn.scalar(select(capacities.c.taken)
                                      .where(capacities.c.key == f"product:{product}:stock"))
    # Seed credit, six debits, the top-up, one debit: every balance_after in order.
    assert [int(r.balance_after) for r in rows] == [
        6 * PRICE, 5 * PRICE, 4 * PRICE, 3 * PRICE, 2 * PRICE, PRICE, 0, PRICE, 0]
    assert [int(b) for b in revenue] == [PRICE * k for k in range(1, 8)]
    assert balance == 0 and taken == 7
    await _audit(database)


async def test_a_batch_where_every_command_fails_writes_nothing(database: Database) -> None:
    poor = await _user(database, PRICE - 1, 1)
    product = await _product(database, 2)
    commands: list[WalletCommand] = [
        WalletPurchase(poor, "prd_missing", 1),
        WalletPurchase(poor, product, 3),
        WalletPurchase(poor, product, 1),
        WalletAdjustment("usr_missing", "USD", 5, None, "nobody"),
        WalletAdjustment(poor, "USD", -PRICE, None, "too much"),
        WalletPurchase(poor, product, SETTINGS.max_amount),
    ]
    async with database.read() as uow:
        before = await _counts(uow)
    results = await _apply(database, commands)
    assert [_code(r) for r in results] == [
        "NOT_FOUND", "OUT_OF_STOCK", "INSUFFICIENT_BALANCE", "NOT_FOUND",
        "INSUFFICIENT_BALANCE", "VALIDATION_ERROR"]
    async with database.read() as uow:
        assert await _counts(uow) == before
        for series in (ORDER_SERIES, RECEIPT_SERIES):
            assert await sequences.peek(uow.conn, series, str(utcnow().year)) == 0
    await _audit(database)


async def _counts(uow: UnitOfWork) -> dict[str, int]:
    out = {}
    for table in (purchases, receipts, transfers, entries, reservations):
        out[table.name] = int(await uow.conn.scalar(select(func.count()).select_from(table)))
    out["taken"] = int(await uow.conn.scalar(select(func.sum(capacities.c.taken))) or 0)
    out["balances"] = int(await uow.conn.scalar(select(func.sum(accounts.c.balance))) or 0)
    return out


def _normal(result: WalletResult) -> Any:
    """A result with the values that differ between two runs (random ids, clock) blanked."""
    if isinstance(result, PayguardError):
        return (type(result), result.code, result.detail, result.extra)
    out = dict(result)
    for field in ("id", "created_at", "completed_at"):
        out.pop(field, None)
    if out.get("entry"):
        out["entry"] = {k: v for k, v in out["entry"].items() if k not in ("id", "created_at")}
    return out


async def test_mixed_batch_answers_exactly_as_lone_commands(database: Database) -> None:
    rich = await _user(database, 10 * PRICE, 2)
    poor = await _user(database, PRICE // 2, 3)
    product = await _product(database, 3)
    commands: list[WalletCommand] = [
        WalletPurchase(rich, product, 2),
        WalletPurchase(poor, product, 1),           # short of funds
        WalletPurchase(rich, product, 2),           # one item left: out of stock
        WalletPurchase(rich, "prd_unknown", 1),     # unknown product
        WalletAdjustment(poor, "USD", None, 3 * PRICE, "set"),
        WalletPurchase(poor, product, 1),           # now it can pay
        WalletAdjustment(rich, "USD", -100 * PRICE, None, "too much"),
        WalletPurchase(poor, product, 1),           # sold out
    ]

    # Lone: each command through the single-command entry points, in order, inside one
    # transaction that is then rolled back, so the batch starts from the same state.
    lone: list[WalletResult] = []
    async with uncommitted(database) as uow:
        for command in commands:
            try:
                if isinstance(command, WalletPurchase):
                    lone.append(await purchase_with_wallet(
                        uow.conn, SETTINGS, Principal("user", command.user_id),
                        product_id=command.product_id, quantity=command.quantity))
                else:
                    lone.append(await wallets.adjust(
                        uow.conn, user_id=command.user_id, currency=command.currency,
                        amount=command.amount, set_balance=command.set_balance,
                        reason=command.reason))
            except PayguardError as exc:
                lone.append(exc)

    batched = await _apply(database, commands)
    assert [_code(r) for r in batched] == [
        "ok", "INSUFFICIENT_BALANCE", "OUT_OF_STOCK", "NOT_FOUND", "ok", "ok",
        "INSUFFICIENT_BALANCE", "OUT_OF_STOCK"]
    assert [_normal(r) for r in batched] == [_normal(r) for r in lone]
    await _audit(database)


class _CountingDriver:
    """The asyncpg connection, counting what the batch sends on it (``store.prepared``)."""

    def __init__(self, pg: Any, counted: list[str]) -> None:
        self._pg, self._counted = pg, counted

    async def fetch(self, sql: str, *args: Any) -> Any:
        self._counted.append(sql)
        return await self._pg.fetch(sql, *args)

    async def execute(self, sql: str, *args: Any) -> Any:
        self._counted.append(sql)
        return await self._pg.execute(sql, *args)


async def test_statement_count_does_not_grow_with_the_batch(
    database: Database, monkeypatch: pytest.MonkeyPatch,
) -> None:
    buyers = [await _user(database, 100 * PRICE, 10 + i) for i in range(8)]
    product = await _product(database, 200)
    counted: list[str] = []

    def count(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if not statement.lstrip().upper().startswith(("BEGIN", "SAVEPOINT", "RELEASE")):
            counted.append(statement)

    # Statements go through SQLAlchemy (SQLite) or straight to asyncpg (PostgreSQL): both
    # are counted.
    real_driver = prepared.driver

    async def counting_driver(conn: Any) -> Any:
        return _CountingDriver(await real_driver(conn), counted)

    monkeypatch.setattr(prepared, "driver", counting_driver)
    sync_engine = database.engine.sync_engine
    event.listen(sync_engine, "before_cursor_execute", count)
    try:
        # The product is read once and then remembered by the process: warm that first,
        # so both measured batches meet the same state.
        await _apply(database, [WalletPurchase(buyers[0], product, 1)])
        sizes = {}
        for n in (2, 48):
            counted.clear()
            mix: list[WalletCommand] = [WalletPurchase(buyers[i % 8], product, 1)
                                        for i in range(n - 1)]
            mix.append(WalletAdjustment(buyers[1], "USD", PRICE, None, "top-up"))
            results = await _apply(database, mix)
            assert all(isinstance(r, dict) for r in results)
            sizes[n] = len(counted)
    finally:
        event.remove(sync_engine, "before_cursor_execute", count)
    assert sizes[2] == sizes[48] and sizes[2] >= 8, (sizes, [s[:80] for s in counted])
    await _audit(database)


async def test_claim_many_claims_replays_and_refuses(database: Database) -> None:
    now = utcnow()

    def req(key: str, fp: str = "fp") -> keys.KeyRequest:
        return keys.KeyRequest("usr_k", key, fp, "POST", "/api/purchases")

    async def claim(requests: list[keys.KeyRequest]) -> list[keys.ClaimResult]:
        async def tx(uow: UnitOfWork) -> list[keys.ClaimResult]:
            results = await keys.claim_many(uow.conn, requests, now=now, ttl=3600,
                                            lock_timeout=60)
            done = [(r.claim, StoredResponse(201, f"body-{i}".encode(), {}))
                    for i, r in enumerate(results) if r.claim is not None]
            assert await keys.finish_many(uow.conn, done, now)
            return results

        return await database.transaction(tx)

    first = await claim([req("a"), req("b"), req("a"), req("c")])
    assert [r.kind for r in first] == ["claimed", "claimed", "in_progress", "claimed"]
    second = await claim([req("b"), req("new"), req("c", "other")])
    assert [r.kind for r in second] == ["replay", "claimed", "mismatch"]
    assert second[0].response is not None and second[0].response.body == b"body-1"


async def test_number_blocks_are_contiguous_and_a_rollback_returns_them(
    database: Database,
) -> None:
    async with uncommitted(database) as uow:
        assert await sequences.next_block(uow.conn, "t", "2026", 5) == 1

    async def take(n: int) -> int:
        return await database.transaction(
            lambda uow: sequences.next_block(uow.conn, "t", "2026", n))

    assert [await take(5), await take(3), await take(1)] == [1, 6, 9]
    assert await take(1) == 10
