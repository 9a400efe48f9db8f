"""Moving money: one transfer, two entries, two conditional balance updates."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from payguard.clock import utcnow
from payguard.errors import InsufficientBalance
from payguard.ids import new_id
from payguard.ledger.accounts import ensure_platform_account, ensure_wallet
from payguard.ledger.errors import CurrencyMismatch
from payguard.money import ensure_minor_units
from payguard.store.lock_order import account_order
from payguard.store.schema import PRIMITIVES
from payguard.store.tables import Tables

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


async def _apply(conn: AsyncConnection, account_id: str, delta: int, currency: str,
                 now: datetime, tables: Tables) -> int:
    """Add ``delta`` to one balance in a single statement, which also refuses an account in
    another currency than the transfer's, and a debit below zero."""
    accounts = tables.accounts
    stmt = (
        update(accounts)
        .where(accounts.c.id == account_id, accounts.c.currency == currency)
        .values(balance=accounts.c.balance + delta)
        .returning(accounts.c.balance)
    )
    if delta < 0:
        stmt = stmt.where(accounts.c.allow_negative | (accounts.c.balance >= -delta))
    balance = (await conn.execute(stmt)).scalar_one_or_none()
    if balance is not None:
        return int(balance)
    # No row matched: only now is it worth a read to say why.
    held_in = await conn.scalar(select(accounts.c.currency).where(accounts.c.id == account_id))
    if held_in is not None and held_in != currency:
        raise CurrencyMismatch(
            f"account {account_id} is held in {held_in}, the transfer is in {currency}")
    if held_in is None and await _create_if_missing(conn, account_id, currency, now, tables):
        balance = (await conn.execute(stmt)).scalar_one_or_none()
        if balance is not None:
            return int(balance)
    raise InsufficientBalance(f"account {account_id} cannot be debited by {-delta} minor units")


async def _create_if_missing(conn: AsyncConnection, account_id: str, currency: str,
                             now: datetime, tables: Tables) -> bool:
    """Accounts are created up front (users, products, startup); this is the rare path for
    a currency seen for the first time. Creating them lazily on every transfer would make
    each purchase wait on the hot platform row's lock just to learn that it exists."""
    kind_or_user = account_id.removeprefix("plt_").removeprefix("wal_").rsplit("_", 1)[0]
    if account_id.startswith("plt_"):
        await ensure_platform_account(conn, kind_or_user, currency, now, tables=tables)
    elif account_id.startswith("wal_"):
        await ensure_wallet(conn, kind_or_user, currency, now, tables=tables)
    else:
        return False
    return True


def lock_order(account_id: str) -> tuple[bool, str]:
    """Users' accounts before platform accounts, each by id: the global order of
    ``store.lock_order``, so no two transfers deadlock, and the hot platform rows are
    locked last and held briefly."""
    return account_order(account_id)


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
    tables: Tables = PRIMITIVES,
) -> Transfer:
    """Move ``amount`` from ``debit`` to ``credit`` inside the caller's transaction.

    Raises ``InsufficientBalance`` (and changes nothing the caller's rollback won't undo)
    when the debit account may not go below zero and holds less than ``amount``, and
    ``CurrencyMismatch`` when either account is not held in ``currency``. On PostgreSQL a
    deferred constraint trigger also refuses, at commit, any transfer whose entries do not
    sum to zero (the audit checks the same after the fact, on both databases).
    """
    ensure_minor_units(amount)
    if amount <= 0:
        raise ValueError("a transfer moves a positive amount")
    now = now or utcnow()
    balances: dict[str, int] = {}
    for account_id in sorted((debit, credit), key=lock_order):
        delta = -amount if account_id == debit else amount
        balances[account_id] = await _apply(conn, account_id, delta, currency, now, tables)

    transfer_id = new_id("trf")
    transfers, entries = tables.transfers, tables.entries
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
