"""Moving money: one transfer, two entries, two conditional balance updates."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import insert, update
from sqlalchemy.ext.asyncio import AsyncConnection

from payguard.clock import utcnow
from payguard.errors import InsufficientBalance
from payguard.ids import new_id
from payguard.money import ensure_minor_units
from payguard.store.schema import accounts, entries, transfers

__all__ = ["Transfer", "transfer"]


@dataclass(frozen=True, slots=True)
class Transfer:
    id: str
    amount: int
    debit_account_id: str
    credit_account_id: str
    debit_balance_after: int
    credit_balance_after: int
    debit_entry_id: int
    credit_entry_id: int
    created_at: datetime


async def _apply(conn: AsyncConnection, account_id: str, delta: int) -> int:
    """Add ``delta`` to one balance in a single statement; refuse to go below zero."""
    stmt = (
        update(accounts)
        .where(accounts.c.id == account_id)
        .values(balance=accounts.c.balance + delta)
        .returning(accounts.c.balance)
    )
    if delta < 0:
        stmt = stmt.where(accounts.c.allow_negative | (accounts.c.balance >= -delta))
    balance = (await conn.execute(stmt)).scalar_one_or_none()
    if balance is None:
        raise InsufficientBalance(
            f"account {account_id} cannot be debited by {-delta} minor units"
        )
    return int(balance)


async def transfer(
    conn: AsyncConnection,
    *,
    debit: str,
    credit: str,
    amount: int,
    currency: str,
    kind: str,
    purchase_id: str | None = None,
    reason: str | None = None,
    now: datetime | None = None,
) -> Transfer:
    """Move ``amount`` from ``debit`` to ``credit`` inside the caller's transaction.

    Raises ``InsufficientBalance`` (and changes nothing the caller's rollback won't undo)
    when the debit account may not go below zero and holds less than ``amount``.
    """
    ensure_minor_units(amount)
    if amount <= 0:
        raise ValueError("a transfer moves a positive amount")
    now = now or utcnow()
    balances: dict[str, int] = {}
    # Fixed lock order (by id) across all transfers: no deadlock between A->B and B->A.
    for account_id in sorted((debit, credit)):
        delta = -amount if account_id == debit else amount
        balances[account_id] = await _apply(conn, account_id, delta)

    transfer_id = new_id("trf")
    await conn.execute(insert(transfers).values(
        id=transfer_id, kind=kind, amount=amount, currency=currency,
        debit_account_id=debit, credit_account_id=credit, purchase_id=purchase_id,
        reason=reason, created_at=now,
    ))
    ids = (await conn.execute(
        insert(entries).returning(entries.c.id, sort_by_parameter_order=True),
        [
            {"transfer_id": transfer_id, "account_id": debit, "amount": -amount,
             "balance_after": balances[debit], "created_at": now},
            {"transfer_id": transfer_id, "account_id": credit, "amount": amount,
             "balance_after": balances[credit], "created_at": now},
        ],
    )).scalars().all()
    return Transfer(
        id=transfer_id, amount=amount, debit_account_id=debit, credit_account_id=credit,
        debit_balance_after=balances[debit], credit_balance_after=balances[credit],
        debit_entry_id=int(ids[0]), credit_entry_id=int(ids[1]), created_at=now,
    )
