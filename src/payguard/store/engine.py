"""Async engines for SQLite and PostgreSQL, with the durability and locking settings we rely on.

SQLite: WAL (readers never block the writer), ``synchronous=FULL`` (a committed payment
survives a power cut), a busy timeout, and write transactions that start with
``BEGIN IMMEDIATE`` so two writers never both read and then deadlock on upgrade.
PostgreSQL: asyncpg, READ COMMITTED, ``synchronous_commit=on`` (or ``remote_apply``) per
session, a connect timeout so that a multi-host URL moves on from a dead host, and
``pool_pre_ping`` so that connections to a server that died are replaced at checkout.
No statement timeout: a COMMIT waiting for the synchronous standby must not be cancelled,
since a cancelled wait leaves the commit applied locally but not replicated.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool

__all__ = ["SQLITE_BUSY_TIMEOUT_MS", "create_engine", "dialect_name"]

SQLITE_BUSY_TIMEOUT_MS = 30_000


SQLITE_POOL_SIZE = 8


def dialect_name(engine: AsyncEngine) -> str:
    return engine.dialect.name


def create_engine(url: str, *, pool_size: int = 20, echo: bool = False,
                  connect_timeout: float = 5.0,
                  synchronous_commit: str = "on", pre_ping: bool = True) -> AsyncEngine:
    """An engine for ``url`` (already in async-driver form, see ``config.to_async_url``).

    ``pre_ping=False`` saves the ping's three round trips (BEGIN, ``;``, ROLLBACK) per
    checkout, for a pool whose every use is a ``Database.transaction``: a dead connection
    then fails the first statement instead, which the helper replays (nothing was
    committed) after SQLAlchemy has discarded the pool's connections."""
    if url.startswith("sqlite"):
        return _sqlite_engine(url, echo=echo, pool_size=min(pool_size, SQLITE_POOL_SIZE))
    return create_async_engine(
        url,
        echo=echo,
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_timeout=60,
        pool_pre_ping=pre_ping,
        connect_args={"timeout": connect_timeout,
                      "server_settings": {"synchronous_commit": synchronous_commit}},
    )


def _sqlite_engine(url: str, *, echo: bool, pool_size: int) -> AsyncEngine:
    kwargs: dict[str, Any] = {"echo": echo}
    if ":memory:" in url or url.rstrip("/").endswith("sqlite+aiosqlite:"):
        raise ValueError("payguard needs a file-backed SQLite database (WAL, many connections)")
    # A modest pool: SQLite has one writer at a time; more connections only add contention.
    kwargs.update(pool_size=pool_size, max_overflow=pool_size, pool_timeout=120)
    engine = create_async_engine(url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000},
                                 **kwargs)

    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let us issue BEGIN ourselves (pysqlite's implicit BEGIN is DEFERRED).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn: Any) -> None:
        mode = conn.get_execution_options().get("sqlite_begin", "IMMEDIATE")
        conn.exec_driver_sql(f"BEGIN {mode}")

    return engine


def null_pool_engine(url: str) -> AsyncEngine:
    """A pool-less engine for one-shot tools (migrations, CLI commands)."""
    return create_async_engine(url, poolclass=NullPool)
