"""The one global order in which rows shared between requests are locked.

Every transaction that touches more than one of these takes them in this order, and
within each class by key, so no two transactions (lone requests, batches, several
instances) can wait on each other in a cycle on PostgreSQL:

    1. idempotency keys        by (principal, key)   claimed first; lone claims commit at once
    2. purchase rows           by id                 one per request (fulfil, refund, cancel)
    3. users' wallets          by account id         ``lock_accounts(users' ids)``
    4. capacity counters       by key                stock and class-rep seats, then their
                                                     stock items (``SKIP LOCKED``)
    5. platform accounts       by account id         revenue, funding, card: hot, held briefly
    6. sequence counters       receipt and order numbers: the hottest rows, taken last

Paths and where they follow it: the group-commit writer (``service.batch_apply``: keys,
wallets, stock, platform, counters), lone transfers (``ledger.transfer`` sorts users'
accounts before platform ones), card fulfilment and refunds (``service.lifecycle``,
``service.refunds``: purchase row, then ``lock_shared_rows`` before anything else).

SQLite needs none of this: write transactions begin ``IMMEDIATE`` and exclude each other,
so the helpers only lock on PostgreSQL.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import Select, select
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncConnection

from payguard.store.prepared import Query, in_list
from payguard.store.schema import PRIMITIVES
from payguard.store.tables import Tables

__all__ = [
    "account_order",
    "is_platform_account",
    "lock_accounts",
    "lock_capacities",
    "lock_shared_rows",
]

PLATFORM_PREFIX = "plt_"


def is_platform_account(account_id: str) -> bool:
    return account_id.startswith(PLATFORM_PREFIX)


def account_order(account_id: str) -> tuple[bool, str]:
    """Sort key: users' accounts before platform accounts, each by id."""
    return (is_platform_account(account_id), account_id)


def _locking(dialect: Dialect, stmt: Select[Any]) -> Select[Any]:
    return stmt.with_for_update() if dialect.name == "postgresql" else stmt


_LOCK_ACCOUNTS = Query("lock_accounts", lambda d, t: _locking(d, (
    select(t.accounts.c.id, t.accounts.c.balance, t.accounts.c.allow_negative)
    .where(in_list(d, t.accounts.c.id, "ids")).order_by(t.accounts.c.id))))

_LOCK_CAPACITIES = Query("lock_capacities", lambda d, t: _locking(d, (
    select(t.capacities.c.key, t.capacities.c.limit, t.capacities.c.taken)
    .where(in_list(d, t.capacities.c.key, "keys")).order_by(t.capacities.c.key))))


async def lock_accounts(conn: AsyncConnection, account_ids: Iterable[str], *,
                        tables: Tables = PRIMITIVES) -> dict[str, tuple[int, bool]]:
    """``{id: (balance, allow_negative)}`` of the accounts that exist, locked in id order
    until the transaction ends. Pass one class at a time (users' or platform accounts)."""
    ids = sorted(set(account_ids))
    if not ids:
        return {}
    return {r["id"]: (int(r["balance"]), bool(r["allow_negative"]))
            for r in await _LOCK_ACCOUNTS.fetch(conn, tables, ids=ids)}


async def lock_capacities(conn: AsyncConnection, keys: Iterable[str], *,
                          tables: Tables = PRIMITIVES) -> dict[str, tuple[int, int]]:
    """``{key: (limit, taken)}``, locked in key order until the transaction ends."""
    wanted = sorted(set(keys))
    if not wanted:
        return {}
    return {r["key"]: (int(r["limit"]), int(r["taken"]))
            for r in await _LOCK_CAPACITIES.fetch(conn, tables, keys=wanted)}


async def lock_shared_rows(conn: AsyncConnection, *, account_ids: Iterable[str] = (),
                           capacity_keys: Iterable[str] = ()) -> None:
    """For lone paths: take every shared row the transaction will touch, in the global
    order, before touching any of them (PostgreSQL only; SQLite needs no row locks)."""
    if conn.dialect.name != "postgresql":
        return
    ids = set(account_ids)
    await lock_accounts(conn, (a for a in ids if not is_platform_account(a)))
    await lock_capacities(conn, capacity_keys)
    await lock_accounts(conn, (a for a in ids if is_platform_account(a)))
