"""The unit of work: one database transaction per command, rolled back unless committed.

    async with db.unit_of_work() as uow:
        await ledger.debit(uow.conn, ...)
        await uow.commit()

Transient failures (PostgreSQL serialization failures and deadlocks, SQLite busy) are
retried with a bound by ``Database.run``, which re-runs the whole command function: a
block that is half-done can't be resumed, only replayed from the start.

A server that is gone, restarting or read-only (a failover: see ``store.availability``)
gets the connection discarded and ``DatabaseUnavailable`` raised (503). ``Database.run``
replays the command for up to ``unavailable_wait`` seconds first, but only while its
COMMIT was never sent: a connection lost *during* COMMIT raises ``CommitOutcomeUnknown``
and is never replayed here, because the commit may have applied. The caller's
idempotency key settles it on the client's retry.
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

from payguard.errors import CommitOutcomeUnknown, DatabaseUnavailable
from payguard.store.availability import is_unavailable
from payguard.store.server import ServerProbe, ServerStatus

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
        # Set just before COMMIT is sent: from then on a lost connection leaves the
        # outcome unknown, and the transaction must not be replayed blindly.
        self.commit_started = False
        # Callbacks run after a successful commit (e.g. wake the outbox dispatcher).
        self._after_commit: list[Callable[[], None]] = []

    @property
    def dialect(self) -> str:
        return self.conn.dialect.name

    def after_commit(self, callback: Callable[[], None]) -> None:
        self._after_commit.append(callback)

    async def commit(self) -> None:
        self.commit_started = True
        await self.conn.commit()
        self.committed = True
        for callback in self._after_commit:
            callback()

    async def rollback(self) -> None:
        await self.conn.rollback()


class Database:
    """Owns the engine; hands out units of work. One per app, created at startup."""

    def __init__(self, engine: AsyncEngine, *, max_attempts: int = 8,
                 unavailable_wait: float = 2.0) -> None:
        self.engine = engine
        self.max_attempts = max_attempts
        # Seconds ``run`` keeps replaying a command that found no writable server before
        # answering 503 (a failover usually needs a few seconds; the client retries after).
        self.unavailable_wait = unavailable_wait
        self.probe = ServerProbe(engine)

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    async def server_status(self) -> ServerStatus:
        """Which server we are connected to and whether it takes writes (cached briefly)."""
        return await self.probe.status()

    @asynccontextmanager
    async def unit_of_work(self, *, readonly: bool = False) -> AsyncIterator[UnitOfWork]:
        uow: UnitOfWork | None = None
        try:
            async with self.engine.connect() as conn:
                if readonly and self.dialect == "sqlite":
                    await conn.execution_options(sqlite_begin="DEFERRED")
                try:
                    await conn.begin()
                    uow = UnitOfWork(conn)
                    try:
                        yield uow
                    finally:
                        if not uow.committed and conn.in_transaction():
                            await conn.rollback()
                except BaseException as exc:
                    if is_unavailable(exc):
                        # Never hand this connection out again: it points at a dead,
                        # restarting or read-only server.
                        await _invalidate(conn)
                    raise
        except Exception as exc:
            if isinstance(exc, DatabaseUnavailable) or not is_unavailable(exc):
                raise
            self.probe.forget()
            if uow is not None and uow.commit_started and not uow.committed:
                raise CommitOutcomeUnknown(
                    "the database connection was lost during COMMIT; retry with the same "
                    "Idempotency-Key to get the outcome"
                ) from exc
            error = DatabaseUnavailable("no writable database server is reachable right now")
            error.nothing_committed = uow is None or not uow.commit_started
            raise error from exc

    async def run(self, fn: Callable[[UnitOfWork], Awaitable[T]], *,
                  readonly: bool = False) -> T:
        """Run ``fn`` in a fresh unit of work, replaying it on transient conflicts.

        ``fn`` must commit itself; anything it leaves uncommitted is rolled back.
        """
        attempt = 0
        unavailable_since: float | None = None
        while True:
            attempt += 1
            try:
                async with self.unit_of_work(readonly=readonly) as uow:
                    return await fn(uow)
            except DatabaseUnavailable as exc:
                # Replay only what certainly did not commit, and only for a while.
                if not exc.nothing_committed:
                    raise
                now = asyncio.get_running_loop().time()
                unavailable_since = unavailable_since or now
                if now - unavailable_since >= self.unavailable_wait:
                    raise
                log.info("database unavailable, retrying the transaction: %s",
                         exc.__cause__)
                await asyncio.sleep(min(0.25, 0.02 * 2 ** min(attempt, 8))
                                    * random.uniform(0.5, 1.5))
                attempt -= 1  # waiting for a server is not a conflict attempt
            except DBAPIError as exc:
                if attempt >= self.max_attempts or not is_retryable(exc):
                    raise
                delay = min(0.5, 0.005 * 2**attempt) * random.uniform(0.5, 1.5)
                log.info("retrying transaction after %s (attempt %d)", type(exc).__name__,
                         attempt)
                await asyncio.sleep(delay)

    async def dispose(self) -> None:
        await self.engine.dispose()


async def _invalidate(conn: AsyncConnection) -> None:
    try:
        await conn.invalidate()
    except Exception:  # the connection is already unusable; nothing more to release
        log.debug("invalidating a dead connection failed", exc_info=True)
