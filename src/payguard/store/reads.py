"""Hot single-statement reads, compiled once and run straight on the driver.

The reads behind almost every request (a token's user, a wallet balance, a completed
idempotency key) are one indexed ``SELECT`` each. Through SQLAlchemy's async engine each
costs a pool checkout with a pre-ping round trip, ``BEGIN``/``ROLLBACK`` around it,
statement cache-key generation, a greenlet switch, and on SQLite five hand-offs to
aiosqlite's thread (cursor, execute, fetch, close, rollback). A ``HotRead`` is compiled
once per dialect and run outside any transaction (one statement is atomic on its own):

- on PostgreSQL through a small asyncpg pool of its own, connected like the engine (the
  dialect's own reading of the URL: several hosts, ``target_session_attrs=read-write``, so
  reads go where writes go) and without a pre-ping. The failover rules of
  ``store.availability`` hold: a read that meets a dead, restarting or read-only server
  drops that connection (asyncpg's pool replaces it) and runs once more, since a read
  changed nothing; if that fails too it is ``DatabaseUnavailable`` (503), and the
  ``Database`` is told so (``on_unavailable``: its server probe is forgotten). asyncpg
  prepares each statement once per connection and reuses it.
- on SQLite on a small pool of threads, each holding its own ``query_only`` connection
  (this path can never write): one thread hand-off per read, a WAL snapshot per statement.

Parameters must be plain values (str, int) that need no bind processing; result columns
get SQLAlchemy's own result processors (e.g. SQLite timestamps back to ``datetime``).
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import threading
from collections import namedtuple
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Select
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncEngine

from payguard.errors import DatabaseUnavailable
from payguard.store.availability import is_unavailable

__all__ = ["HotRead", "HotReader"]


def _connection_broken(exc: BaseException) -> bool:
    """The server is gone, restarting or read-only (``is_unavailable``), or asyncpg's
    protocol state broke because the server ended the session while the connection sat
    idle in the pool (a terminated backend shows up as ``InternalClientError`` on the
    next query): either way this connection is done, and a new one may succeed."""
    return is_unavailable(exc) or type(exc).__name__ == "InternalClientError"


@dataclass(frozen=True, slots=True)
class _Compiled:
    sql: str
    params: tuple[str, ...]
    defaults: dict[str, Any]  # values of binds the statement carries itself (literals)
    processors: tuple[Callable[[Any], Any] | None, ...]
    row: Any  # a namedtuple type with the selected columns' names


class HotRead:
    """A ``select(...)`` with named ``bindparam``s, compiled lazily once per dialect."""

    def __init__(self, stmt: Select[Any]) -> None:
        self.stmt = stmt
        self._compiled: dict[str, _Compiled] = {}

    def compiled(self, dialect: Dialect) -> _Compiled:
        found = self._compiled.get(dialect.name)
        if found is None:
            c = self.stmt.compile(dialect=dialect)
            columns = list(self.stmt.selected_columns)
            found = _Compiled(
                sql=c.string, params=tuple(c.positiontup or ()),
                defaults={name: bind.effective_value for name, bind in c.binds.items()
                          if bind.value is not None},
                processors=tuple(col.type._cached_result_processor(dialect, None)
                                 for col in columns),
                row=namedtuple("Row", [col.key for col in columns]),  # type: ignore[misc]
            )
            self._compiled[dialect.name] = found
        return found


class HotReader:
    """Runs ``HotRead``s for one database. Owned by ``Database`` (``db.hot``), closed
    with it."""

    def __init__(self, engine: AsyncEngine, *, pool_size: int = 4,
                 connect_timeout: float = 5.0,
                 on_unavailable: Callable[[], None] = lambda: None) -> None:
        self.dialect = engine.dialect
        self.url = engine.url
        self.pool_size = pool_size
        self.connect_timeout = connect_timeout
        self.on_unavailable = on_unavailable
        self._pg_pool: Any = None
        self._pg_lock = asyncio.Lock()
        self._threads: ThreadPoolExecutor | None = None
        self._local = threading.local()
        self._sqlite_conns: list[sqlite3.Connection] = []
        self._conns_lock = threading.Lock()

    async def fetch_one(self, read: HotRead, **params: Any) -> Any | None:
        rows = await self.fetch_all(read, **params)
        return rows[0] if rows else None

    async def fetch_all(self, read: HotRead, **params: Any) -> list[Any]:
        c = read.compiled(self.dialect)
        args = [params[name] if name in params else c.defaults[name] for name in c.params]
        if self.dialect.name == "sqlite":
            raw: Sequence[Sequence[Any]] = await asyncio.get_running_loop().run_in_executor(
                self._sqlite_executor(), self._sqlite_fetch, c.sql, args)
        else:
            raw = await self._pg_fetch(c.sql, args)
        return [c.row(*(v if p is None else p(v)
                        for p, v in zip(c.processors, r, strict=True)))
                for r in raw]

    # -- SQLite -------------------------------------------------------------------------

    def _sqlite_executor(self) -> ThreadPoolExecutor:
        if self._threads is None:
            self._threads = ThreadPoolExecutor(self.pool_size,
                                               thread_name_prefix="payguard-read")
        return self._threads

    def _sqlite_fetch(self, sql: str, args: list[Any]) -> list[tuple[Any, ...]]:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            from payguard.store.engine import SQLITE_BUSY_TIMEOUT_MS

            conn = sqlite3.connect(self.url.database or "", isolation_level=None,
                                   check_same_thread=False)
            conn.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
            conn.execute("PRAGMA query_only=1")  # this path can never write
            self._local.conn = conn
            with self._conns_lock:
                self._sqlite_conns.append(conn)
        return conn.execute(sql, args).fetchall()

    # -- PostgreSQL -----------------------------------------------------------------------

    async def _pg_fetch(self, sql: str, args: list[Any]) -> Sequence[Sequence[Any]]:
        for attempt in (1, 2):
            try:
                pool = self._pg_pool or await self._open_pg()
                async with pool.acquire() as conn:
                    try:
                        rows: Sequence[Sequence[Any]] = await conn.fetch(sql, *args)
                    except Exception as exc:
                        if _connection_broken(exc):
                            # Never handed out again; the pool opens a new one. (asyncpg
                            # may have detached it already: nothing left to close then.)
                            with contextlib.suppress(Exception):
                                conn.terminate()
                        raise
                return rows
            except Exception as exc:
                if not _connection_broken(exc):
                    raise
                self.on_unavailable()
                # A read changed nothing, so it runs once more, on a fresh connection
                # (through the URL's hosts again); then it is a 503.
                if attempt == 2:
                    raise DatabaseUnavailable(
                        "no database server is reachable right now") from exc
        raise AssertionError("unreachable")

    async def _open_pg(self) -> Any:
        async with self._pg_lock:
            if self._pg_pool is None:
                import asyncpg

                # The dialect's own translation of the URL (several hosts,
                # target_session_attrs=read-write): reads go where writes go.
                cargs, cparams = self.dialect.create_connect_args(self.url)
                self._pg_pool = await asyncpg.create_pool(
                    *cargs, min_size=1, max_size=self.pool_size,
                    timeout=self.connect_timeout, **cparams)
        return self._pg_pool

    async def close(self) -> None:
        if self._pg_pool is not None:
            await self._pg_pool.close()
            self._pg_pool = None
        if self._threads is not None:
            self._threads.shutdown(wait=True)
            self._threads = None
        with self._conns_lock:
            for conn in self._sqlite_conns:
                conn.close()
            self._sqlite_conns.clear()
