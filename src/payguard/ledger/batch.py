"""Transfers in batch form: many transfers decided in order, written with a constant
number of statements.

    locked = await lock_accounts(conn, users_accounts)      # store.lock_order
    batch = TransferBatch(locked, now=now)
    batch.plan(debit=wallet, credit=revenue, amount=500, currency="USD", kind="purchase")
    ...                                                       # InsufficientBalance per plan
    written = await batch.write(conn)                         # list[Transfer], plan order

``plan`` decides each transfer against the running balances of the users' accounts the
caller locked, so one wallet can appear many times and each debit sees the ones before
it. ``write`` then applies one net change per account (users' accounts in one statement;
platform accounts, the hot rows, in one more, locked only now), inserts every transfer
and every entry with multi-row statements, each entry carrying its account's
``balance_after`` in plan order. The ``CHECK (balance >= 0)`` still backs every wallet.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import case, update
from sqlalchemy.ext.asyncio import AsyncConnection

from payguard.errors import InsufficientBalance
from payguard.ids import new_id
from payguard.ledger.accounts import ensure_platform_account
from payguard.ledger.transfers import Transfer
from payguard.money import ensure_minor_units
from payguard.store.lock_order import is_platform_account, lock_accounts
from payguard.store.prepared import insert_rows_then, is_postgresql, pg_fetch, pg_sql
from payguard.store.schema import PRIMITIVES
from payguard.store.tables import Tables

__all__ = ["PlannedTransfer", "TransferBatch"]


@dataclass(frozen=True, slots=True)
class PlannedTransfer:
    id: str
    debit: str
    credit: str
    amount: int
    currency: str
    kind: str
    purchase_id: str | None
    reason: str | None
    #: Users' accounts' balances right after this transfer (platform ones: at write).
    debit_balance_after: int | None
    credit_balance_after: int | None


class TransferBatch:
    """Transfers of one transaction, decided against locked balances, written at once."""

    def __init__(self, locked: dict[str, tuple[int, bool]], *, now: datetime,
                 tables: Tables = PRIMITIVES) -> None:
        self.now = now
        self.tables = tables
        self._balance = {account: balance for account, (balance, _neg) in locked.items()}
        self._allow_negative = {account for account, (_b, neg) in locked.items() if neg}
        self._planned: list[PlannedTransfer] = []

    def balance(self, account_id: str) -> int:
        """The running balance of a locked account (0 for a wallet that doesn't exist)."""
        return self._balance.get(account_id, 0)

    def plan(self, *, debit: str, credit: str, amount: int, currency: str, kind: str,
             purchase_id: str | None = None, reason: str | None = None) -> PlannedTransfer:
        """Decide one transfer now; nothing is written until ``write``.

        Raises ``InsufficientBalance`` (and plans nothing) when ``debit`` is a user's
        account holding less than ``amount`` at this point of the batch.
        """
        ensure_minor_units(amount)
        if amount <= 0:
            raise ValueError("a transfer moves a positive amount")
        if debit == credit:
            raise ValueError("a transfer needs two accounts")
        if not is_platform_account(credit) and credit not in self._balance:
            raise ValueError(f"account {credit} was not locked before planning")
        if not is_platform_account(debit) and debit not in self._allow_negative \
                and self.balance(debit) < amount:
            # Same words as the lone ``transfer``: a request gets the same answer either way.
            raise InsufficientBalance(
                f"account {debit} cannot be debited by {amount} minor units"
            )
        after: dict[str, int | None] = {}
        for account, delta in ((debit, -amount), (credit, amount)):
            if is_platform_account(account):
                after[account] = None
            else:
                self._balance[account] = self.balance(account) + delta
                after[account] = self._balance[account]
        planned = PlannedTransfer(
            id=new_id("trf"), debit=debit, credit=credit, amount=amount, currency=currency,
            kind=kind, purchase_id=purchase_id, reason=reason,
            debit_balance_after=after[debit], credit_balance_after=after[credit],
        )
        self._planned.append(planned)
        return planned

    def __len__(self) -> int:
        return len(self._planned)

    async def write(self, conn: AsyncConnection) -> list[Transfer]:
        """Apply the planned transfers: net balance changes, transfers, entries."""
        if not self._planned:
            return []
        net: dict[str, int] = {}
        currency: dict[str, str] = {}
        for t in self._planned:
            net[t.debit] = net.get(t.debit, 0) - t.amount
            net[t.credit] = net.get(t.credit, 0) + t.amount
            currency[t.debit] = currency[t.credit] = t.currency
        users = {a: d for a, d in net.items() if not is_platform_account(a)}
        platform = {a: d for a, d in net.items() if is_platform_account(a)}
        if is_postgresql(conn) and len(platform) <= 1:
            # One statement for both: the users' rows are already locked, so the revenue
            # row is still the last one this batch locks (store.lock_order).
            platform_final = await self._apply_platform(conn, platform, currency,
                                                        users={a: d for a, d in users.items()
                                                               if d})
        else:
            await self._apply_users(conn, users, currency)
            platform_final = await self._apply_platform(conn, platform, currency)
        # Platform balances before the batch, then each entry's balance_after in order.
        running = {a: platform_final[a] - d for a, d in platform.items()}
        transfer_rows: list[dict[str, Any]] = [
            {"id": t.id, "kind": t.kind, "amount": t.amount, "currency": t.currency,
             "debit_account_id": t.debit, "credit_account_id": t.credit,
             "purchase_id": t.purchase_id, "reason": t.reason, "created_at": self.now}
            for t in self._planned
        ]
        rows: list[dict[str, Any]] = []
        afters: list[tuple[int, int]] = []
        for t in self._planned:
            pair: list[int] = []
            for account, amount, known in ((t.debit, -t.amount, t.debit_balance_after),
                                           (t.credit, t.amount, t.credit_balance_after)):
                if known is None:
                    running[account] += amount
                    known = running[account]
                pair.append(known)
                rows.append({"transfer_id": t.id, "account_id": account, "amount": amount,
                             "balance_after": known, "created_at": self.now})
            afters.append((pair[0], pair[1]))
        # Matched back by (transfer, account), unique per entry: asking for RETURNING in
        # parameter order would make SQLite insert row by row.
        ids = {(r["transfer_id"], r["account_id"]): int(r["id"]) for r in await insert_rows_then(
            conn, self.tables.transfers, transfer_rows, self.tables.entries, rows,
            returning=["id", "transfer_id", "account_id"])}
        return [
            Transfer(id=t.id, amount=t.amount, debit_account_id=t.debit,
                     credit_account_id=t.credit, debit_balance_after=after[0],
                     credit_balance_after=after[1], debit_entry_id=ids[(t.id, t.debit)],
                     credit_entry_id=ids[(t.id, t.credit)], created_at=self.now)
            for t, after in zip(self._planned, afters, strict=True)
        ]

    async def _apply_users(self, conn: AsyncConnection, net: dict[str, int],
                           currency: dict[str, str]) -> None:
        changed = {a: d for a, d in net.items() if d}
        if not changed:
            return
        accounts = self.tables.accounts
        if is_postgresql(conn):
            ids = list(changed)
            updated = len(await pg_fetch(conn, pg_sql(_PG_APPLY, self.tables), ids,
                                         [changed[a] for a in ids],
                                         [currency[a] for a in ids]))
        else:
            updated = (await conn.execute(
                update(accounts).where(accounts.c.id.in_(list(changed)),
                                       accounts.c.currency == case(
                                           {a: currency[a] for a in changed},
                                           value=accounts.c.id))
                .values(balance=accounts.c.balance + case(changed, value=accounts.c.id))
            )).rowcount
        if updated != len(changed):
            raise ValueError("a user's account changed, vanished or is in another currency")

    async def _apply_platform(self, conn: AsyncConnection, net: dict[str, int],
                              currency: dict[str, str], *, users: dict[str, int] | None = None
                              ) -> dict[str, int]:
        """One statement for the platform accounts' net changes (and ``users``' changes,
        already locked, when given); the platform accounts' final balances."""
        if not net and not users:
            return {}
        if len(net) > 1 and conn.dialect.name == "postgresql":
            # Several hot rows: take them in id order.
            await lock_accounts(conn, net, tables=self.tables)
        final = await self._add(conn, {**(users or {}), **net}, currency)
        if users and any(a not in final for a in users):
            raise ValueError("a user's account changed, vanished or is in another currency")
        missing = [a for a in net if a not in final]
        if missing:  # a currency seen for the first time: rare, so not set-based
            for account in missing:
                kind = account.removeprefix("plt_").rsplit("_", 1)[0]
                await ensure_platform_account(conn, kind, currency[account], self.now,
                                              tables=self.tables)
            final.update(await self._add(conn, {a: net[a] for a in missing}, currency))
        return {a: final[a] for a in net}

    async def _add(self, conn: AsyncConnection, net: dict[str, int], currency: dict[str, str]
                   ) -> dict[str, int]:
        """Add each net change to its account (in the transfer's currency only); the
        balances after, of the accounts that exist."""
        if is_postgresql(conn):
            ids = list(net)
            rows = await pg_fetch(conn, pg_sql(_PG_APPLY, self.tables), ids, [net[a] for a in ids],
                                  [currency[a] for a in ids])
            return {r["id"]: int(r["balance"]) for r in rows}
        accounts = self.tables.accounts
        stmt = (update(accounts)
                .where(accounts.c.id.in_(list(net)),
                       accounts.c.currency == case({a: currency[a] for a in net},
                                                   value=accounts.c.id))
                .values(balance=accounts.c.balance + case(net, value=accounts.c.id))
                .returning(accounts.c.id, accounts.c.balance))
        return {r.id: int(r.balance) for r in await conn.execute(stmt)}


# One net change per account, for any number of accounts, with one SQL text (asyncpg
# prepares it once): the accounts' ids, changes and the transfers' currency as arrays.
_PG_APPLY = (
    "UPDATE {p}accounts AS a SET balance = a.balance + v.delta "
    "FROM unnest($1::VARCHAR(40)[], $2::BIGINT[], $3::VARCHAR(3)[]) AS v(id, delta, currency) "
    "WHERE a.id = v.id AND a.currency = v.currency RETURNING a.id, a.balance"
)
