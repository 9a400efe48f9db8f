"""PostgreSQL advisory locks scoped to one transaction, for critical sections that live
entirely inside it (no external call): released by COMMIT/ROLLBACK, so never leaked.

On SQLite every write transaction already begins with ``BEGIN IMMEDIATE`` (one writer at a
time), which is a stronger exclusion; these functions are then no-ops that return True.
"""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

__all__ = ["advisory_xact_lock", "try_advisory_xact_lock"]

# hashtextextended gives a stable 64-bit key for any string (PostgreSQL >= 11).
_LOCK = text("SELECT pg_advisory_xact_lock(hashtextextended(:key, 0))")
_TRY = text("SELECT pg_try_advisory_xact_lock(hashtextextended(:key, 0))")


async def advisory_xact_lock(conn: AsyncConnection, key: str) -> None:
    """Block until ``key`` is ours for the rest of the open transaction."""
    if conn.dialect.name == "postgresql":
        await conn.execute(_LOCK, {"key": key})


async def try_advisory_xact_lock(conn: AsyncConnection, key: str) -> bool:
    """Take ``key`` for the rest of the open transaction if free; False if someone holds it."""
    if conn.dialect.name != "postgresql":
        return True
    return bool((await conn.execute(_TRY, {"key": key})).scalar_one())
