"""Ledger accounts: a wallet per (user, currency) and platform accounts per currency."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from payguard.clock import utcnow
from payguard.store import dialect
from payguard.store.schema import PRIMITIVES
from payguard.store.tables import Tables

__all__ = [
    "PLATFORM_KINDS",
    "balance",
    "ensure_account",
    "ensure_platform_account",
    "ensure_platform_accounts",
    "ensure_wallet",
    "ensure_wallets",
    "lock_balance",
    "platform_account_id",
    "wallet_account_id",
]

#: revenue: what users paid for goods; funding: money put in or taken out by admins;
#: card: money that reached us through the card provider (top-ups, card refunds).
PLATFORM_KINDS = ("revenue", "funding", "card")


def wallet_account_id(user_id: str, currency: str) -> str:
    # Deterministic ids make "create if missing" a plain ON CONFLICT (id) DO NOTHING.
    return f"wal_{user_id}_{currency}"


def platform_account_id(kind: str, currency: str) -> str:
    return f"plt_{kind}_{currency}"


async def _ensure(conn: AsyncConnection, values: dict[str, object],
                  tables: Tables = PRIMITIVES) -> str:
    accounts = tables.accounts
    stmt = dialect.insert(conn, accounts).values(**values).on_conflict_do_nothing(
        index_elements=[accounts.c.id]
    )
    await conn.execute(stmt)
    return str(values["id"])


async def ensure_account(conn: AsyncConnection, account_id: str, *, currency: str,
                         kind: str, owner_id: str | None = None,
                         allow_negative: bool = False, now: datetime | None = None,
                         tables: Tables = PRIMITIVES) -> str:
    """Create account ``account_id`` (balance 0) unless it exists; returns its id.

    ``allow_negative=False`` (a customer's balance) makes any debit below zero fail with
    ``InsufficientBalance``; ``True`` is for the accounts money enters from outside (a
    funding or revenue account), whose balance is the negative of what they handed out.
    """
    return await _ensure(conn, {
        "id": account_id, "owner_id": owner_id, "kind": kind, "currency": currency,
        "balance": 0, "allow_negative": allow_negative, "created_at": now or utcnow(),
    }, tables=tables)


async def balance(conn: AsyncConnection, account_id: str, *,
                  tables: Tables = PRIMITIVES) -> int | None:
    """The balance of ``account_id`` in minor units (None: no such account)."""
    value = await conn.scalar(
        select(tables.accounts.c.balance).where(tables.accounts.c.id == account_id))
    return None if value is None else int(value)


async def ensure_wallet(conn: AsyncConnection, user_id: str, currency: str,
                        now: datetime | None = None, *, tables: Tables = PRIMITIVES) -> str:
    return await _ensure(conn, {
        "id": wallet_account_id(user_id, currency), "owner_id": user_id, "kind": "wallet",
        "currency": currency, "balance": 0, "allow_negative": False,
        "created_at": now or utcnow(),
    }, tables=tables)


async def ensure_wallets(conn: AsyncConnection, owners: list[tuple[str, str]],
                         now: datetime | None = None, *, tables: Tables = PRIMITIVES
                         ) -> list[str]:
    """Batch form of ``ensure_wallet`` for ``(user_id, currency)`` pairs: one statement."""
    if not owners:
        return []
    accounts = tables.accounts
    now = now or utcnow()
    rows = {wallet_account_id(u, c): {
        "id": wallet_account_id(u, c), "owner_id": u, "kind": "wallet", "currency": c,
        "balance": 0, "allow_negative": False, "created_at": now,
    } for u, c in owners}
    ordered = [rows[k] for k in sorted(rows)]  # id order: the global lock order
    await conn.execute(dialect.insert(conn, accounts).on_conflict_do_nothing(
        index_elements=[accounts.c.id]), ordered)
    return [wallet_account_id(u, c) for u, c in owners]


async def ensure_platform_account(conn: AsyncConnection, kind: str, currency: str,
                                  now: datetime | None = None, *,
                                  tables: Tables = PRIMITIVES) -> str:
    if kind not in PLATFORM_KINDS:
        raise ValueError(f"unknown platform account kind {kind!r}")
    return await _ensure(conn, {
        "id": platform_account_id(kind, currency), "owner_id": None, "kind": kind,
        "currency": currency, "balance": 0, "allow_negative": True,
        "created_at": now or utcnow(),
    }, tables=tables)


async def ensure_platform_accounts(conn: AsyncConnection, currency: str,
                                   now: datetime | None = None, *,
                                   tables: Tables = PRIMITIVES) -> None:
    """Create every platform account of ``currency`` (startup, new products/programs)."""
    for kind in PLATFORM_KINDS:
        await ensure_platform_account(conn, kind, currency, now, tables=tables)


async def lock_balance(conn: AsyncConnection, account_id: str, *,
                       tables: Tables = PRIMITIVES) -> int | None:
    """Read a balance with the row locked until the transaction ends (for ``set_balance``).

    SQLite needs no row lock: write transactions start ``IMMEDIATE`` and exclude each other.
    """
    accounts = tables.accounts
    stmt = select(accounts.c.balance).where(accounts.c.id == account_id)
    if conn.dialect.name == "postgresql":
        stmt = stmt.with_for_update()
    value = await conn.scalar(stmt)
    return None if value is None else int(value)
