"""Wallet reads and admin adjustments."""

from __future__ import annotations

from typing import Any

from sqlalchemy import bindparam, select
from sqlalchemy.ext.asyncio import AsyncConnection

from payguard import ledger
from payguard.clock import isoformat, utcnow
from payguard.errors import PayguardError
from payguard.service.wallet_batch import WalletAdjustment, apply_wallet_commands
from payguard.store.reads import HotRead, HotReader
from payguard.store.schema import accounts, entries, transfers

__all__ = ["adjust", "get_wallet", "list_entries", "read_wallet"]

_BALANCE = HotRead(select(accounts.c.balance).where(accounts.c.id == bindparam("account")))


async def read_wallet(reader: HotReader, user_id: str, currency: str) -> dict[str, Any]:
    """``get_wallet`` for GET /api/wallet: one statement on the driver, no transaction."""
    row = await reader.fetch_one(_BALANCE, account=ledger.wallet_account_id(user_id, currency))
    return {"currency": currency, "balance": int(row.balance) if row is not None else 0}


async def get_wallet(conn: AsyncConnection, user_id: str, currency: str) -> dict[str, Any]:
    """The balance as the caller's transaction sees it."""
    balance = await conn.scalar(
        select(accounts.c.balance).where(
            accounts.c.id == ledger.wallet_account_id(user_id, currency)
        )
    )
    return {"currency": currency, "balance": int(balance or 0)}


async def list_entries(conn: AsyncConnection, user_id: str, currency: str, *, limit: int,
                       cursor: int | None) -> dict[str, Any]:
    """Newest first; ``next_cursor`` is the id to continue below (keyset paging)."""
    query = (
        select(entries.c.id, entries.c.amount, entries.c.balance_after, entries.c.created_at,
               transfers.c.kind, transfers.c.purchase_id, transfers.c.reason)
        .join(transfers, transfers.c.id == entries.c.transfer_id)
        .where(entries.c.account_id == ledger.wallet_account_id(user_id, currency))
        .order_by(entries.c.id.desc())
        .limit(limit + 1)
    )
    if cursor is not None:
        query = query.where(entries.c.id < cursor)
    rows = (await conn.execute(query)).all()
    page = rows[:limit]
    return {
        "entries": [
            {"id": str(r.id), "amount": int(r.amount), "balance_after": int(r.balance_after),
             "kind": r.kind, "purchase_id": r.purchase_id, "reason": r.reason,
             "created_at": isoformat(r.created_at)}
            for r in page
        ],
        "next_cursor": str(page[-1].id) if len(rows) > limit else None,
    }


async def adjust(conn: AsyncConnection, *, user_id: str, currency: str, amount: int | None,
                 set_balance: int | None, reason: str) -> dict[str, Any]:
    """Credit or debit a wallet by ``amount``, or move it to ``set_balance``.

    A batch of one through the group-commit code (``service.wallet_batch``): the wallet
    row is locked before its balance is read, so the difference ``set_balance`` records
    is exact even while purchases race it.
    """
    (result,) = await apply_wallet_commands(conn, None, [
        WalletAdjustment(user_id, currency, amount, set_balance, reason)], utcnow())
    if isinstance(result, PayguardError):
        raise result
    return result
