"""The audit: every invariant payguard promises, checked against the stored data."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from payguard.store.schema import (
    accounts,
    capacities,
    entries,
    programs,
    purchases,
    receipts,
    reservations,
    stock_items,
)

__all__ = ["run_audit"]


async def run_audit(conn: AsyncConnection) -> dict[str, Any]:
    problems: list[dict[str, str]] = []

    def problem(kind: str, detail: str) -> None:
        problems.append({"kind": kind, "detail": detail})

    sums = (
        select(entries.c.account_id, func.coalesce(func.sum(entries.c.amount), 0).label("s"))
        .group_by(entries.c.account_id).subquery()
    )
    rows = (await conn.execute(
        select(accounts.c.id, accounts.c.kind, accounts.c.balance, accounts.c.allow_negative,
               func.coalesce(sums.c.s, 0).label("journal"))
        .outerjoin(sums, sums.c.account_id == accounts.c.id)
    )).all()
    wallets_checked = 0
    for r in rows:
        wallets_checked += r.kind == "wallet"
        if int(r.balance) != int(r.journal):
            problem("balance_mismatch",
                    f"account {r.id}: balance {r.balance} but journal sums to {r.journal}")
        if not r.allow_negative and int(r.balance) < 0:
            problem("negative_balance", f"account {r.id}: balance {r.balance}")
    unbalanced = (await conn.execute(
        select(entries.c.transfer_id).group_by(entries.c.transfer_id)
        .having((func.sum(entries.c.amount) != 0) | (func.count() != 2))
    )).scalars().all()
    for t in unbalanced:
        problem("unbalanced_transfer", f"transfer {t}: entries do not sum to zero in pairs")

    for p in (await conn.execute(
        select(programs.c.id, programs.c.class_rep_limit, capacities.c.taken)
        .join(capacities, capacities.c.key == programs.c.capacity_key)
    )).all():
        if int(p.taken) > int(p.class_rep_limit):
            problem("class_rep_over_limit",
                    f"program {p.id}: {p.taken} seats taken, limit {p.class_rep_limit}")
    held = (
        select(reservations.c.capacity_key,
               func.coalesce(func.sum(reservations.c.quantity), 0).label("q"))
        .where(reservations.c.state.in_(("held", "kept")))
        .group_by(reservations.c.capacity_key).subquery()
    )
    for c in (await conn.execute(
        select(capacities.c.key, capacities.c.taken, func.coalesce(held.c.q, 0).label("q"))
        .outerjoin(held, held.c.capacity_key == capacities.c.key)
    )).all():
        if int(c.taken) != int(c.q):
            problem("capacity_mismatch",
                    f"capacity {c.key}: counter says {c.taken}, reservations hold {c.q}")

    for r in (await conn.execute(
        select(stock_items.c.product_id, stock_items.c.value, func.count().label("n"))
        .where(stock_items.c.state != "available")
        .group_by(stock_items.c.product_id, stock_items.c.value)
        .having(func.count() > 1)
    )).all():
        problem("item_assigned_twice", f"product {r.product_id} item {r.value}: {r.n} times")

    for column, kind in ((purchases.c.receipt_number, "duplicate_receipt"),
                         (purchases.c.order_number, "duplicate_order_number")):
        for r in (await conn.execute(
            select(column.label("v"), func.count().label("n")).where(column.is_not(None))
            .group_by(column).having(func.count() > 1)
        )).all():
            problem(kind, f"{r.v} used {r.n} times")

    for r in (await conn.execute(
        select(receipts.c.series, receipts.c.period, func.min(receipts.c.seq).label("lo"),
               func.max(receipts.c.seq).label("hi"), func.count().label("n"),
               func.count(func.distinct(receipts.c.seq)).label("d"))
        .group_by(receipts.c.series, receipts.c.period)
    )).all():
        if int(r.d) != int(r.n):
            problem("duplicate_receipt", f"{r.series}/{r.period}: repeated sequence numbers")
        if int(r.lo) != 1 or int(r.hi) != int(r.d):
            problem("receipt_gap",
                    f"{r.series}/{r.period}: {r.d} receipts span {r.lo}..{r.hi}")

    return {"ok": not problems, "wallets_checked": wallets_checked, "problems": problems}
