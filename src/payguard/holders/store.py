"""The ``holders`` table: one row per running process, renewed by its heartbeat.

Times are the app's clock (UTC), like every other lease time stored next to them
(``idempotency_keys.locked_at``): the processes of one deployment share a clock source.
"""

from __future__ import annotations

import os
import socket
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, delete, exists, not_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from payguard.store import dialect
from payguard.store.schema import PRIMITIVES
from payguard.store.tables import Tables

__all__ = ["beat", "holder_alive", "holder_dead", "purge_stale", "register", "retire"]


async def register(conn: AsyncConnection, holder_id: str, now: datetime, *,
                   tables: Tables = PRIMITIVES) -> None:
    """Announce this process (or re-announce it after its row was purged)."""
    holders = tables.holders
    await conn.execute(
        dialect.insert(conn, holders).values(
            id=holder_id, pid=os.getpid(), host=socket.gethostname()[:255],
            started_at=now, heartbeat_at=now,
        ).on_conflict_do_update(
            index_elements=[holders.c.id], set_={"heartbeat_at": now},
        )
    )


async def beat(conn: AsyncConnection, holder_id: str, now: datetime, *,
               tables: Tables = PRIMITIVES) -> bool:
    """Renew the heartbeat; False when the row is gone (purged as dead): register again."""
    holders = tables.holders
    result = await conn.execute(
        update(holders).where(holders.c.id == holder_id).values(heartbeat_at=now)
    )
    return result.rowcount == 1


async def retire(conn: AsyncConnection, holder_id: str, *, tables: Tables = PRIMITIVES) -> None:
    """A clean shutdown: what this process still held is takeable at once."""
    holders = tables.holders
    await conn.execute(delete(holders).where(holders.c.id == holder_id))


async def purge_stale(conn: AsyncConnection, older_than: datetime, *,
                      tables: Tables = PRIMITIVES) -> int:
    """Forget processes silent since ``older_than`` (their claims stay takeable: a claim
    whose holder row is missing counts as dead)."""
    holders = tables.holders
    result = await conn.execute(delete(holders).where(holders.c.heartbeat_at < older_than))
    return int(result.rowcount)


def holder_alive(holder_id: ColumnElement[Any] | str, now: datetime,
                 lease: float, *, tables: Tables = PRIMITIVES) -> ColumnElement[bool]:
    """SQL: the holder has renewed its heartbeat within ``lease`` seconds of ``now``."""
    holders = tables.holders
    return exists(
        select(holders.c.id).where(
            holders.c.id == holder_id,
            holders.c.heartbeat_at >= now - timedelta(seconds=lease),
        )
    )


def holder_dead(holder_id: ColumnElement[Any], now: datetime,
                lease: float, *, tables: Tables = PRIMITIVES) -> ColumnElement[bool]:
    """SQL: a recorded holder that has not renewed within ``lease`` (or is gone).

    A NULL holder (a claim made without one, e.g. by a library user) is never "dead":
    only the lock timeout frees it.
    """
    return holder_id.is_not(None) & not_(holder_alive(holder_id, now, lease, tables=tables))
