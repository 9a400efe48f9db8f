"""``Heartbeat``: registers this process as a holder and keeps its lease renewed."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import Callable
from datetime import datetime, timedelta

from payguard.clock import utcnow
from payguard.holders import store
from payguard.store.schema import PRIMITIVES
from payguard.store.tables import Tables
from payguard.store.uow import Database, UnitOfWork

__all__ = ["Heartbeat", "new_holder_id"]

log = logging.getLogger("payguard.holders")

# Rows of processes silent this long are deleted (their claims are long takeable anyway).
PURGE_AFTER = timedelta(hours=1)


def new_holder_id() -> str:
    """A fresh random holder id (``hld_`` and 16 hex digits)."""
    return "hld_" + secrets.token_hex(8)


class Heartbeat:
    """This process's holder row, renewed every ``lease / 4`` seconds.

    Four beats per lease leave room for a few slow or failed writes (a busy database, a
    dropped connection) before the others conclude we died. If they still do (a process
    frozen past its lease), they take over what we held: every write we make on a claim or
    under a lock is conditioned on still owning it, so a late writer changes nothing.
    """

    def __init__(self, db: Database, *, lease: float, holder_id: str | None = None,
                 clock: Callable[[], datetime] = utcnow,
                 tables: Tables = PRIMITIVES) -> None:
        if not lease > 0:
            raise ValueError(f"holder lease must be positive, got {lease!r}")
        self.db = db
        self.lease = lease
        self.id = holder_id or new_holder_id()
        self.clock = clock
        self.tables = tables
        self.beats = 0
        self._task: asyncio.Task[None] | None = None

    @property
    def interval(self) -> float:
        return self.lease / 4

    async def _write(self, first: bool) -> None:
        async def tx(uow: UnitOfWork) -> None:
            now = self.clock()
            if first or not await store.beat(uow.conn, self.id, now, tables=self.tables):
                await store.register(uow.conn, self.id, now, tables=self.tables)

        await self.db.transaction(tx)
        self.beats += 1

    async def start(self) -> None:
        """Register (raises if the database is unreachable) and start renewing."""
        await self._write(first=True)
        self._task = asyncio.create_task(self._loop(), name=f"payguard-heartbeat:{self.id}")

    async def _loop(self) -> None:
        since_purge = 0.0
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self._write(first=False)
            except Exception:  # database blip: the next beat tries again
                log.warning("heartbeat of %s failed", self.id, exc_info=True)
            since_purge += self.interval
            if since_purge >= 60.0:
                since_purge = 0.0
                with contextlib.suppress(Exception):
                    await self._purge()

    async def _purge(self) -> None:
        await self.db.transaction(
            lambda uow: store.purge_stale(uow.conn, self.clock() - PURGE_AFTER,
                                          tables=self.tables))

    async def stop(self) -> None:
        """Stop renewing and retire the row: what we still hold is takeable at once."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

        try:
            await self.db.transaction(
                lambda uow: store.retire(uow.conn, self.id, tables=self.tables))
        except Exception:
            log.warning("retiring holder %s failed; it lapses by itself", self.id,
                        exc_info=True)
