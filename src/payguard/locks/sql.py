"""Database lock backend over the ``lock_leases`` table, on SQLite and PostgreSQL.

Every operation is one statement in its own short, committed transaction: a lease is a
row, never an open transaction, so holding a lock ties up no connection and survives
nothing it should not (a crashed holder's lease simply expires). Times come from the
database clock, so app servers with skewed clocks agree on who holds what.

Rows are never deleted: releasing or cleaning clears ``owner`` and keeps
``fencing_token``, so the next holder's token is always larger, even after a clean-up.

Waiting is a poll with jittered exponential backoff. Neither SQLite nor a portable
PostgreSQL setup gives us a wake-up signal tied to a row (LISTEN/NOTIFY needs a dedicated
connection per process and is lost across reconnects); a try is a single indexed upsert,
so polling with a short, randomised back-off is cheap and keeps contenders out of lockstep.
The price: across processes waiters are not served in arrival order (the luckiest poll wins)
and a hand-off between processes takes up to one back-off step (at most ``_POLL_MAX``).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from typing import Any

from sqlalchemy import BigInteger, ColumnElement, and_, literal_column, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import DBAPIError, InterfaceError
from sqlalchemy.ext.asyncio import AsyncEngine

from payguard.locks.errors import LockBackendUnavailable
from payguard.locks.types import Grant, HeldLock
from payguard.store.schema import PRIMITIVES
from payguard.store.tables import Tables
from payguard.store.uow import is_retryable

__all__ = ["SqlBackend", "db_now_ms"]

_PG_NOW_MS = "(extract(epoch from clock_timestamp()) * 1000)::bigint"
_SQLITE_NOW_MS = "CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER)"

# Poll back-off bounds (seconds) while waiting for a held key.
_POLL_MIN = 0.002
_POLL_MAX = 0.05


def db_now_ms(dialect: str) -> ColumnElement[Any]:
    """The database's own clock in epoch milliseconds, as a SQL expression."""
    return literal_column(_PG_NOW_MS if dialect == "postgresql" else _SQLITE_NOW_MS,
                          type_=BigInteger)


class _Gate:
    """The local queue of one key's waiters in this process."""

    __slots__ = ("lock", "users", "wake")

    def __init__(self) -> None:
        self.lock = asyncio.Lock()  # FIFO: waiters of this process are served in order
        self.wake = asyncio.Event()  # set by a release in this process
        self.users = 0


class SqlBackend:
    """Leases as rows of ``tables.lock_leases`` in the application's own database: locks
    shared by every process that uses that database, with no other server to run."""

    name = "sql"

    def __init__(self, engine: AsyncEngine, *, tables: Tables = PRIMITIVES) -> None:
        self._leases = tables.lock_leases
        self._gates: dict[str, _Gate] = {}
        self._engine = engine
        self._dialect = engine.dialect.name
        self._now = db_now_ms(self._dialect)

    async def _execute(self, stmt: Any, *, readonly: bool = False) -> Any:
        """Run one statement in its own committed transaction; rows come back as a list."""
        for attempt in range(1, 6):
            try:
                async with self._engine.connect() as conn:
                    if readonly and self._dialect == "sqlite":
                        # A read needs no write lock; IMMEDIATE is the engine's default.
                        await conn.execution_options(sqlite_begin="DEFERRED")
                    async with conn.begin():
                        result = await conn.execute(stmt)
                        return result.all() if result.returns_rows else result.rowcount
            except DBAPIError as exc:
                if is_retryable(exc) and attempt < 5:
                    await asyncio.sleep(0.005 * attempt * random.uniform(0.5, 1.5))
                    continue
                if isinstance(exc, InterfaceError) or exc.connection_invalidated:
                    raise LockBackendUnavailable(f"lock database unreachable: {exc.orig}") from exc
                raise
            except OSError as exc:
                raise LockBackendUnavailable(f"lock database unreachable: {exc}") from exc
        raise AssertionError("unreachable")

    async def try_acquire(self, key: str, owner: str, ttl_ms: int) -> Grant | None:
        """One conditional upsert: take the row when it is free, lapsed, or absent."""
        insert = postgresql.insert if self._dialect == "postgresql" else sqlite.insert
        ins = insert(self._leases).values(
            key=key, owner=owner, fencing_token=1,
            acquired_at_ms=self._now, expires_at_ms=self._now + ttl_ms,
        )
        row = self._leases.c
        stmt = ins.on_conflict_do_update(
            index_elements=[row.key],
            set_={
                "owner": ins.excluded.owner,
                "fencing_token": row.fencing_token + 1,
                "acquired_at_ms": ins.excluded.acquired_at_ms,
                "expires_at_ms": ins.excluded.expires_at_ms,
            },
            where=or_(row.owner.is_(None), row.expires_at_ms <= ins.excluded.acquired_at_ms),
        ).returning(row.fencing_token, row.expires_at_ms)
        requested_at = time.monotonic()
        rows = await self._execute(stmt)
        return Grant(int(rows[0][0]), int(rows[0][1]), requested_at) if rows else None

    async def acquire(self, key: str, owner: str, ttl_ms: int, wait: float) -> Grant | None:
        grant = await self.try_acquire(key, owner, ttl_ms)
        if grant is not None or wait <= 0:
            return grant
        deadline = time.monotonic() + wait
        # Waiters of one process queue on a local gate (FIFO) and only its head polls the
        # database: 64 local contenders cost one poller, not 64, and a release in this
        # process wakes that poller at once instead of after its back-off.
        gate = self._gates.get(key)
        if gate is None:
            gate = self._gates[key] = _Gate()
        gate.users += 1
        try:
            try:
                await asyncio.wait_for(gate.lock.acquire(), deadline - time.monotonic())
            except TimeoutError:
                return None
            try:
                return await self._poll(key, owner, ttl_ms, deadline, gate)
            finally:
                gate.lock.release()
        finally:
            gate.users -= 1
            if gate.users == 0:
                del self._gates[key]  # no per-key state outlives its waiters

    async def _poll(self, key: str, owner: str, ttl_ms: int, deadline: float,
                    gate: _Gate) -> Grant | None:
        delay = _POLL_MIN
        while True:
            gate.wake.clear()
            grant = await self.try_acquire(key, owner, ttl_ms)
            if grant is not None:
                return grant
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            pause = min(remaining, delay * random.uniform(0.5, 1.5))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(gate.wake.wait(), pause)
            delay = min(_POLL_MAX, delay * 2)

    async def release(self, key: str, owner: str) -> bool:
        row = self._leases.c
        stmt = (update(self._leases)
                .where(row.key == key, row.owner == owner)
                .values(owner=None, acquired_at_ms=None, expires_at_ms=None))
        released = int(await self._execute(stmt)) == 1
        gate = self._gates.get(key)
        if released and gate is not None:
            gate.wake.set()
        return released

    async def extend(self, key: str, owner: str, ttl_ms: int) -> int | None:
        if ttl_ms <= 0:  # would end the lease while reporting it extended
            raise ValueError("a lease TTL must be positive")
        row = self._leases.c
        stmt = (update(self._leases)
                .where(row.key == key, row.owner == owner, row.expires_at_ms > self._now)
                .values(expires_at_ms=self._now + ttl_ms)
                .returning(row.expires_at_ms))
        rows = await self._execute(stmt)
        return int(rows[0][0]) if rows else None

    def _active(self) -> ColumnElement[bool]:
        row = self._leases.c
        return and_(row.owner.is_not(None), row.expires_at_ms > self._now)

    async def has_active(self, key: str) -> bool:
        stmt = select(self._leases.c.key).where(self._leases.c.key == key, self._active())
        return bool(await self._execute(stmt, readonly=True))

    async def held(self) -> list[HeldLock]:
        row = self._leases.c
        stmt = (select(row.key, row.fencing_token, row.expires_at_ms)
                .where(self._active()).order_by(row.key).limit(1000))
        rows = await self._execute(stmt, readonly=True)
        return [HeldLock(k, int(t), int(e)) for k, t, e in rows]

    async def healthy(self) -> bool:
        try:
            await self._execute(select(self._now), readonly=True)
        except Exception:  # any failure means "not healthy"
            return False
        return True

    async def clean_expired(self) -> int:
        """Clear lapsed leases (the row and its fencing token stay)."""
        row = self._leases.c
        stmt = (update(self._leases)
                .where(row.owner.is_not(None), row.expires_at_ms <= self._now)
                .values(owner=None, acquired_at_ms=None, expires_at_ms=None))
        return int(await self._execute(stmt))

    async def close(self) -> None:
        """The engine belongs to the ``Database``; nothing of ours to close."""
