"""The unit of work: one database transaction per command, rolled back unless committed.

    async with db.unit_of_work() as uow:
        await ledger.debit(uow.conn, ...)
        await uow.commit()

Transient failures (PostgreSQL serialization failures and deadlocks, SQLite busy) are
retried with a bound by ``Database.run``, which re-runs the whole command function: a
block that is half-done can't be resumed, only replayed from the start.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import TypeVar

from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

__all__ = ["Database", "UnitOfWork", "is_retryable"]

T = TypeVar("T")
log = logging.getLogger("payguard.store")

RETRYABLE_SQLSTATES = {"40001", "40P01"}  # serialization_failure, deadlock_detected


def is_retryable(exc: BaseException) -> bool:
    """True for errors that a fresh attempt of the same transaction may not hit again."""
    if not isinstance(exc, DBAPIError):
        return False
    orig = exc.orig
    sqlstate = getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)
    if sqlstate in RETRYABLE_SQLSTATES:
        return True
    if isinstance(exc, OperationalError):
        msg = str(orig).lower()
        return "database is locked" in msg or "database is busy" in msg
    return False


class UnitOfWork:
    """An open transaction. ``conn`` is for the primitives; only the service commits."""

    def __init__(self, conn: AsyncConnection) -> None:
        self.conn = conn
        self.committed = False
        # Callbacks run after a successful commit (e.g. wake the outbox dispatcher).
        self._after_commit: list[Callable[[], None]] = []

    @property
    def dialect(self) -> str:
        return self.conn.dialect.name

    def after_commit(self, callback: Callable[[], None]) -> None:
        self._after_commit.append(callback)

    async def commit(self) -> None:
        await self.conn.commit()
        self.committed = True
        for callback in self._after_commit:
            callback()

    async def rollback(self) -> None:
        await self.conn.rollback()


class Database:
    """Owns the engine; hands out units of work. One per app, created at startup."""

    def __init__(self, engine: AsyncEngine, *, max_attempts: int = 8) -> None:
        self.engine = engine
        self.max_attempts = max_attempts

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @asynccontextmanager
    async def unit_of_work(self, *, readonly: bool = False) -> AsyncIterator[UnitOfWork]:
        async with self.engine.connect() as conn:
            if readonly and self.dialect == "sqlite":
                await conn.execution_options(sqlite_begin="DEFERRED")
            await conn.begin()
            uow = UnitOfWork(conn)
            try:
                yield uow
            finally:
                if not uow.committed and conn.in_transaction():
                    await conn.rollback()

    async def run(self, fn: Callable[[UnitOfWork], Awaitable[T]], *,
                  readonly: bool = False) -> T:
        """Run ``fn`` in a fresh unit of work, replaying it on transient conflicts.

        ``fn`` must commit itself; anything it leaves uncommitted is rolled back.
        """
        attempt = 0
        while True:
            attempt += 1
            try:
                async with self.unit_of_work(readonly=readonly) as uow:
                    return await fn(uow)
            except DBAPIError as exc:
                if attempt >= self.max_attempts or not is_retryable(exc):
                    raise
                delay = min(0.5, 0.005 * 2**attempt) * random.uniform(0.5, 1.5)
                log.info("retrying transaction after %s (attempt %d)", type(exc).__name__,
                         attempt)
                await asyncio.sleep(delay)

    async def dispose(self) -> None:
        await self.engine.dispose()
