"""The primitives bound to one ``Tables`` bundle: what an application calls.

Each class is a thin handle over the functions the reference service calls itself
(``payguard.ledger``, ``payguard.sequences``, ``payguard.capacity``, ``payguard.inbox``,
``payguard.outbox``), with the application's tables filled in. Every method takes the open
connection of the caller's transaction (``uow.conn`` inside ``await db.transaction(fn)``)
and never commits: the effects commit or roll back with the caller's own writes.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from payguard import capacity, inbox, ledger, outbox, sequences
from payguard.capacity import Capacity
from payguard.config import to_async_url
from payguard.ledger.accounts import balance, ensure_account
from payguard.ledger.transfers import Transfer
from payguard.store.engine import create_engine
from payguard.store.tables import Tables, tables
from payguard.store.uow import Database

__all__ = ["Counters", "Inbox", "Ledger", "Outbox", "Sequences", "connect"]


def connect(url: str, *, pool_size: int = 20) -> Database:
    """A ``Database`` over ``url`` (``sqlite:///path.db`` or ``postgresql://...``) with the
    engine settings payguard's guarantees rely on: on SQLite WAL, ``synchronous=FULL`` and
    ``BEGIN IMMEDIATE`` write transactions; on PostgreSQL asyncpg, READ COMMITTED,
    ``synchronous_commit=on``. Close it with ``await db.dispose()``."""
    return Database(create_engine(to_async_url(url), pool_size=pool_size))


class Ledger:
    """A double-entry ledger whose non-negative accounts can never go below zero.

    A transfer is one conditional ``UPDATE`` per account (``balance >= amount`` for a
    debit) plus two journal entries summing to zero, in the caller's transaction; the
    ``CHECK (allow_negative OR balance >= 0)`` and, on PostgreSQL, a deferred trigger that
    refuses unbalanced entries at commit back it up. Concurrent debits never overdraw.
    """

    def __init__(self, bundle: Tables | None = None) -> None:
        self.tables = bundle or tables()

    async def open_account(self, conn: AsyncConnection, account_id: str, *, currency: str,
                           kind: str = "account", owner_id: str | None = None,
                           allow_negative: bool = False) -> str:
        """Create ``account_id`` with balance 0 unless it exists (``INSERT ... ON CONFLICT
        DO NOTHING``: safe to race). ``allow_negative`` is for the accounts money enters
        through (funding, revenue)."""
        return await ensure_account(conn, account_id, currency=currency, kind=kind,
                                    owner_id=owner_id, allow_negative=allow_negative,
                                    tables=self.tables)

    async def transfer(self, conn: AsyncConnection, *, debit: str, credit: str, amount: int,
                       currency: str, kind: str, reason: str | None = None,
                       reference: str | None = None, now: datetime | None = None) -> Transfer:
        """Move ``amount`` minor units from ``debit`` to ``credit``.

        Raises ``InsufficientBalance`` when ``debit`` may not go negative and holds less,
        ``CurrencyMismatch`` when an account is held in another currency. ``reference``
        (up to 40 characters) is kept on the transfer, e.g. your order id.
        """
        return await ledger.transfer(conn, debit=debit, credit=credit, amount=amount,
                                     currency=currency, kind=kind, purchase_id=reference,
                                     reason=reason, now=now, tables=self.tables)

    async def balance(self, conn: AsyncConnection, account_id: str) -> int | None:
        """The balance in minor units (None: no such account)."""
        return await balance(conn, account_id, tables=self.tables)

    async def journal_total(self, conn: AsyncConnection, account_id: str | None = None) -> int:
        """The sum of the journal entries (of one account, or of all: always 0)."""
        entries = self.tables.entries
        stmt = select(func.coalesce(func.sum(entries.c.amount), 0))
        if account_id is not None:
            stmt = stmt.where(entries.c.account_id == account_id)
        return int(await conn.scalar(stmt) or 0)


class Sequences:
    """Gapless numbers per (series, period): invoice 1, 2, 3 ... with no gap or duplicate.

    The counter row is upserted and stays locked until the caller's transaction ends, so
    concurrent callers queue on it and a rollback gives the number back.
    """

    def __init__(self, bundle: Tables | None = None) -> None:
        self.tables = bundle or tables()

    async def next(self, conn: AsyncConnection, series: str, period: str = "") -> int:
        """The next number of (series, period), starting at 1."""
        return await sequences.next_value(conn, series, period, tables=self.tables)

    async def peek(self, conn: AsyncConnection, series: str, period: str = "") -> int:
        """The last number handed out (0: none yet), without taking one."""
        return await sequences.peek(conn, series, period, tables=self.tables)


class Counters:
    """Capacity counters (seats, stock) that can never pass their limit.

    ``take`` is one conditional ``UPDATE ... SET taken = taken + q WHERE taken + q <=
    limit``; ``reserve`` also records a hold per reference that ``release`` gives back
    exactly once, however many cancels race. ``CHECK (taken <= limit)`` backs it up.
    """

    def __init__(self, bundle: Tables | None = None) -> None:
        self.tables = bundle or tables()

    async def create(self, conn: AsyncConnection, key: str, limit: int) -> None:
        """A new counter of ``limit`` units (an existing key raises an integrity error)."""
        await capacity.create(conn, key, limit, tables=self.tables)

    async def get(self, conn: AsyncConnection, key: str) -> Capacity | None:
        """The counter as it is now (None: no such key)."""
        return await capacity.get(conn, key, tables=self.tables)

    async def grow(self, conn: AsyncConnection, key: str, by: int) -> None:
        """Raise the limit by ``by``."""
        await capacity.grow(conn, key, by, tables=self.tables)

    async def take(self, conn: AsyncConnection, key: str, quantity: int = 1) -> bool:
        """Take ``quantity`` units for good; False (nothing changed) when too few are left."""
        return await capacity.take(conn, key, quantity, tables=self.tables)

    async def reserve(self, conn: AsyncConnection, key: str, reference: str,
                      quantity: int = 1, *, expires_at: datetime | None = None,
                      keep: bool = False) -> bool:
        """Hold ``quantity`` units for ``reference`` (up to 40 characters); False when too
        few are left. ``keep=True`` makes the hold permanent at once."""
        return await capacity.reserve(conn, key, reference, quantity, expires_at=expires_at,
                                      keep_now=keep, tables=self.tables)

    async def keep(self, conn: AsyncConnection, key: str, reference: str) -> bool:
        """Turn ``reference``'s hold into a permanent take; True if it was held."""
        return await capacity.keep(conn, key, reference, tables=self.tables)

    async def release(self, conn: AsyncConnection, key: str, reference: str) -> int:
        """Give ``reference``'s units back, exactly once; returns how many were freed."""
        return await capacity.release(conn, key, reference, tables=self.tables)


class Inbox:
    """Each incoming event id applied at most once: record it in the transaction that
    applies it; a duplicate (even a concurrent one) finds the primary key taken."""

    def __init__(self, bundle: Tables | None = None) -> None:
        self.tables = bundle or tables()

    async def record(self, conn: AsyncConnection, *, source: str, event_id: str,
                     type: str, object_id: str | None = None,
                     outcome: str = "applied") -> bool:
        """True: first delivery, apply it now (same transaction). False: seen before."""
        return await inbox.record_event(conn, provider=source, event_id=event_id, type=type,
                                        object_id=object_id, outcome=outcome,
                                        tables=self.tables)

    async def purge_older_than(self, conn: AsyncConnection, age: timedelta) -> int:
        """Forget events older than ``age`` (after which a redelivery would apply again)."""
        return await inbox.purge_older_than(conn, age, tables=self.tables)


class Outbox:
    """Messages written in the transaction of the change they announce, delivered after
    it commits by an ``OutboxDispatcher``; one message per ``dedupe_key``."""

    def __init__(self, bundle: Tables | None = None) -> None:
        self.tables = bundle or tables()

    async def enqueue(self, conn: AsyncConnection, *, dedupe_key: str, kind: str,
                      recipient: str, subject: str, body: str) -> bool:
        """Queue one message; False if ``dedupe_key`` was queued before."""
        return await outbox.enqueue(conn, dedupe_key=dedupe_key, kind=kind,
                                    recipient=recipient, subject=subject, body=body,
                                    tables=self.tables)

    async def count_pending(self, conn: AsyncConnection) -> int:
        """Messages not yet delivered nor given up on."""
        return await outbox.count_pending(conn, tables=self.tables)

    def dispatcher(self, db: Database, transport: outbox.Transport | None = None, *,
                   max_attempts: int | None = None) -> outbox.OutboxDispatcher:
        """A dispatcher delivering this outbox through ``transport`` (default: the local
        mailbox, i.e. marked sent). Run it with ``run_forever(stop)`` or ``run_once()``."""
        return outbox.OutboxDispatcher(db, None, transport=transport,
                                       max_attempts=max_attempts, tables=self.tables)
