"""Which database server this process is connected to, and whether it takes writes.

``GET /healthz`` reports it, so an operator (or the failover harness) can see each
instance follow the primary. The answer is cached for ``max_age`` seconds and computed by
one probe at a time, so a load balancer polling every instance stays cheap; a request that
finds the server gone clears the cache (``forget``) so the next health check looks again.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from payguard.store.availability import is_unavailable

__all__ = ["ServerProbe", "ServerStatus"]

PROBE_TIMEOUT = 5.0

_PG_PROBE = text(
    "SELECT host(inet_server_addr()) AS addr, current_setting('port') AS port, "
    "pg_is_in_recovery() AS in_recovery, "
    "current_setting('transaction_read_only') = 'on' AS read_only"
)


@dataclass(frozen=True, slots=True)
class ServerStatus:
    reachable: bool
    #: ``host:port`` of the PostgreSQL server (``socket:port`` over a Unix socket), or
    #: the SQLite file; None when unreachable.
    server: str | None
    writable: bool
    error: str | None = None


class ServerProbe:
    def __init__(self, engine: AsyncEngine, *, max_age: float = 1.0) -> None:
        self.engine = engine
        self.max_age = max_age
        self._cached: tuple[float, ServerStatus] | None = None
        self._lock = asyncio.Lock()

    def forget(self) -> None:
        self._cached = None

    async def status(self) -> ServerStatus:
        cached = self._cached
        if cached is not None and time.monotonic() - cached[0] < self.max_age:
            return cached[1]
        async with self._lock:  # one probe at a time; the others take its answer
            cached = self._cached
            if cached is not None and time.monotonic() - cached[0] < self.max_age:
                return cached[1]
            try:
                result = await asyncio.wait_for(self._probe(), PROBE_TIMEOUT)
            except Exception as exc:
                result = ServerStatus(False, None, False, f"{type(exc).__name__}: {exc}")
            self._cached = (time.monotonic(), result)
            return result

    async def _probe(self) -> ServerStatus:
        async with self.engine.connect() as conn:
            try:
                if conn.dialect.name != "postgresql":
                    # DEFERRED: a health check must not queue for SQLite's write lock.
                    await conn.execution_options(sqlite_begin="DEFERRED")
                    await conn.execute(text("SELECT 1"))
                    return ServerStatus(True, self.engine.url.database, True)
                row = (await conn.execute(_PG_PROBE)).one()
                await conn.rollback()
            except Exception as exc:
                if is_unavailable(exc):
                    await conn.invalidate()
                raise
        server = f"{row.addr or 'socket'}:{row.port}"
        return ServerStatus(True, server, not (row.in_recovery or row.read_only))
