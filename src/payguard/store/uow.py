"""The one transaction rule: a use case's writes run in ``await db.transaction(fn)``.

    async def book(uow: UnitOfWork) -> Transfer:
        return await ledger.transfer(uow.conn, ...)   # never commits

    transfer = await ctx.db.transaction(book)        # commits when ``book`` returns

``Database.transaction`` is the only place that commits. It opens a fresh transaction,
calls ``fn(uow)``, commits when ``fn`` returns and rolls back when it raises; on a
transient conflict (PostgreSQL serialization failure or deadlock, SQLite busy) it rolls
back and calls ``fn`` again from the start, at most ``max_attempts`` times. That is why it
takes a function and not an ``async with`` block: a block runs once, so a block that is
half-done cannot be replayed, only a function can. ``fn`` must therefore be safe to run
again from scratch: everything it did in the database was rolled back, and it must not
call the payment provider or other outside systems (those calls go between transactions).

A server that is gone, restarting or read-only (a failover: see ``store.availability``)
gets the connection discarded and ``DatabaseUnavailable`` raised (503). ``transaction``
replays ``fn`` for up to ``unavailable_wait`` seconds first, but only while its COMMIT was
never sent: a connection lost *during* COMMIT raises ``CommitOutcomeUnknown`` and is never
replayed here, because the commit may have applied. The caller's idempotency key settles it
on the client's retry.

Reads run in ``async with db.read() as uow:``; nothing there is ever committed (on
PostgreSQL the transaction is READ ONLY, so a stray write fails loudly instead of being
rolled back in silence). The few reads that answer a request with one statement (token,
wallet balance, idempotency replay) skip even that: ``db.hot`` runs them compiled, on the
driver, outside any transaction (``store.reads``).
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
from payguard.store.reads import HotReader
from payguard.store.server import ServerProbe, ServerStatus

__all__ = ["Database", "UnitOfWork", "is_retryable"]

T = TypeVar("T")
log = logging.getLogger("payguard.store")

RETRYABLE_SQLSTATES = {"40001", "40P01"}  # serialization_failure, deadlock_detected
READ_ONLY_VIOLATION = "25006"


def is_retryable(exc: BaseException) -> bool:
    """True for errors that a fresh attempt of the same transaction may not hit again."""
    if not isinstance(exc, DBAPIError):
        # Statements run on the driver (``store.prepared``) raise asyncpg's own errors.
        return (type(exc).__module__.startswith("asyncpg")
                and getattr(exc, "sqlstate", None) in RETRYABLE_SQLSTATES)
    orig = exc.orig
    sqlstate = getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)
    if sqlstate in RETRYABLE_SQLSTATES:
        return True
    if isinstance(exc, OperationalError):
        msg = str(orig).lower()
        return "database is locked" in msg or "database is busy" in msg
    return False


class UnitOfWork:
    """An open transaction, handed to the functions that run inside it.

    ``conn`` is for the primitives. It has no commit method: the ``Database`` that opened
    the transaction commits it when the use case's function returns.
    """

    def __init__(self, conn: AsyncConnection) -> None:
        self.conn = conn
        # Set just before COMMIT is sent: from then on a lost connection leaves the
        # outcome unknown, and the transaction must not be replayed blindly.
        self.commit_started = False
        self._after_commit: list[Callable[[], None]] = []

    @property
    def dialect(self) -> str:
        return self.conn.dialect.name

    def after_commit(self, callback: Callable[[], None]) -> None:
        """Run ``callback`` once this transaction has committed (not if it rolls back),
        e.g. to wake the outbox dispatcher for a message written here."""
        self._after_commit.append(callback)

    def _committed(self) -> None:
        for callback in self._after_commit:
            try:
                callback()
            except Exception:  # the data is committed; a failed nudge must not hide that
                log.exception("after-commit callback %r failed", callback)


class Database:
    """Owns the engine; runs transactions. One per process, built by ``payguard.bootstrap``."""

    def __init__(self, engine: AsyncEngine, *, max_attempts: int = 8,
                 unavailable_wait: float = 2.0, hot_pool_size: int = 4,
                 connect_timeout: float = 5.0) -> None:
        self.engine = engine
        self.max_attempts = max_attempts
        # Seconds ``transaction`` keeps replaying a function that found no writable server
        # before answering 503 (a failover usually needs a few seconds; the client retries).
        self.unavailable_wait = unavailable_wait
        self.probe = ServerProbe(engine)
        # The hottest single-statement reads, compiled once, straight on the driver.
        self.hot = HotReader(engine, pool_size=hot_pool_size,
                             connect_timeout=connect_timeout,
                             on_unavailable=self.probe.forget)

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    async def server_status(self) -> ServerStatus:
        """Which server we are connected to and whether it takes writes (cached briefly)."""
        return await self.probe.status()

    async def transaction(self, fn: Callable[[UnitOfWork], Awaitable[T]]) -> T:
        """Run ``fn`` in a fresh transaction: commit when it returns, roll back when it
        raises, and replay it from the start on a transient conflict (bounded) or while no
        writable server answers (for ``unavailable_wait`` seconds, never after COMMIT)."""
        attempt = 0
        unavailable_since: float | None = None
        while True:
            attempt += 1
            try:
                return await self._attempt(fn)
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
            except Exception as exc:
                if attempt >= self.max_attempts or not is_retryable(exc):
                    raise
                delay = min(0.5, 0.005 * 2**attempt) * random.uniform(0.5, 1.5)
                log.info("retrying transaction after %s (attempt %d)", type(exc).__name__,
                         attempt)
                await asyncio.sleep(delay)

    async def _attempt(self, fn: Callable[[UnitOfWork], Awaitable[T]]) -> T:
        uow: UnitOfWork | None = None
        try:
            async with self.engine.connect() as conn:
                try:
                    await conn.begin()
                    uow = UnitOfWork(conn)
                    # An exception (or a cancellation) leaves the transaction uncommitted:
                    # closing the connection rolls it back.
                    result = await fn(uow)
                    uow.commit_started = True
                    await conn.commit()  # the one commit of a use case's writes
                except BaseException as exc:
                    if is_unavailable(exc):
                        # Never hand this connection out again: it points at a dead,
                        # restarting or read-only server.
                        await _invalidate(conn)
                    raise
                uow._committed()
                return result
        except Exception as exc:
            translated = self._unavailable(exc, uow)
            if translated is exc:
                raise
            raise translated from exc

    @asynccontextmanager
    async def read(self) -> AsyncIterator[UnitOfWork]:
        """A read-only transaction for queries; it is never committed.

        SQLite: ``BEGIN DEFERRED`` (no write lock, a consistent WAL snapshot). PostgreSQL:
        ``BEGIN READ ONLY``, so a write here is refused instead of silently discarded.
        """
        try:
            async with self.engine.connect() as conn:
                try:
                    if self.dialect == "sqlite":
                        await conn.execution_options(sqlite_begin="DEFERRED")
                    elif self.dialect == "postgresql":
                        await conn.execution_options(postgresql_readonly=True)
                    await conn.begin()
                    yield UnitOfWork(conn)
                except BaseException as exc:
                    if is_unavailable(exc) and not _wrote_in_a_read(exc):
                        await _invalidate(conn)
                    raise
        except Exception as exc:
            translated = exc if _wrote_in_a_read(exc) else self._unavailable(exc, None)
            if translated is exc:
                raise  # not the server's fault (e.g. a write in a read: a caller's bug)
            raise translated from exc

    def _unavailable(self, exc: Exception, uow: UnitOfWork | None) -> Exception:
        """``exc`` itself, or the ``DatabaseUnavailable`` it means."""
        if isinstance(exc, DatabaseUnavailable) or not is_unavailable(exc):
            return exc
        self.probe.forget()
        if uow is not None and uow.commit_started:
            return CommitOutcomeUnknown(
                "the database connection was lost during COMMIT; retry with the same "
                "Idempotency-Key to get the outcome")
        error = DatabaseUnavailable("no writable database server is reachable right now")
        error.nothing_committed = True
        return error

    async def dispose(self) -> None:
        await self.hot.close()
        await self.engine.dispose()


def _wrote_in_a_read(exc: BaseException) -> bool:
    orig = getattr(exc, "orig", None)
    return (getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)) == \
        READ_ONLY_VIOLATION and "read-only transaction" in str(exc)


async def _invalidate(conn: AsyncConnection) -> None:
    try:
        await conn.invalidate()
    except Exception:  # the connection is already unusable; nothing more to release
        log.debug("invalidating a dead connection failed", exc_info=True)
