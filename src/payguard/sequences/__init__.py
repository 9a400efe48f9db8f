"""Gapless named counters per (series, period): receipt and order numbers.

Strategy: a row-locked counter in the caller's transaction. The upsert
``INSERT ... ON CONFLICT DO UPDATE SET last_value = last_value + 1 RETURNING`` takes the
row lock and holds it until the transaction ends, so concurrent payments queue on it and a
rollback hands the number back: no duplicates and no gaps. ``UNIQUE`` on the documents that
carry the numbers is the second guard.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, bindparam, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncConnection

from payguard.store import dialect
from payguard.store.prepared import Query, is_postgresql, pg_fetch, pg_sql
from payguard.store.schema import PRIMITIVES
from payguard.store.tables import Tables

__all__ = ["format_number", "list_sequences", "next_block", "next_blocks", "next_value", "peek"]


async def next_value(conn: AsyncConnection, series: str, period: str, *,
                     tables: Tables = PRIMITIVES) -> int:
    """The next number of (series, period), starting at 1, in the caller's transaction
    (never commits): the row stays locked until that transaction ends, so concurrent
    callers queue, and a rollback hands the number back (no gap, no duplicate)."""
    sequences = tables.sequences
    stmt = dialect.insert(conn, sequences).values(series=series, period=period, last_value=1)
    stmt = stmt.on_conflict_do_update(
        index_elements=[sequences.c.series, sequences.c.period],
        set_={"last_value": sequences.c.last_value + 1},
    ).returning(sequences.c.last_value)
    return int((await conn.execute(stmt)).scalar_one())


async def peek(conn: AsyncConnection, series: str, period: str, *,
               tables: Tables = PRIMITIVES) -> int:
    """The last value handed out (0 when none), without taking a number."""
    sequences = tables.sequences
    value = await conn.scalar(
        select(sequences.c.last_value).where(
            sequences.c.series == series, sequences.c.period == period
        )
    )
    return int(value or 0)


async def list_sequences(conn: AsyncConnection, *,
                         tables: Tables = PRIMITIVES) -> list[dict[str, object]]:
    """Every (series, period) with its last value handed out and the next one."""
    sequences = tables.sequences
    rows = await conn.execute(
        select(sequences).order_by(sequences.c.series, sequences.c.period)
    )
    return [
        {
            "series": r.series,
            "period": r.period,
            "last_value": int(r.last_value),
            "next_number": int(r.last_value) + 1,
        }
        for r in rows
    ]


def format_number(fmt: str, *, at: datetime, seq: int) -> str:
    """Render a document number, e.g. ``SC{year}{seq:06d}`` -> ``SC2026000001``."""
    return fmt.format(year=at.year, month=at.month, seq=seq)


async def next_block(conn: AsyncConnection, series: str, period: str, count: int, *,
                     tables: Tables = PRIMITIVES) -> int:
    """Take ``count`` consecutive numbers of (series, period) in one statement; returns the
    first. Never commits: a rollback hands the whole block back, so the series stays
    gapless however many documents one transaction numbers."""
    if count < 1:
        raise ValueError("a block holds at least one number")
    rows = await _NEXT_BLOCK.fetch(conn, tables, series=series, period=period, count=count)
    return int(rows[0]["last_value"]) - count + 1


async def next_blocks(conn: AsyncConnection, period: str, blocks: list[tuple[str, int]], *,
                      tables: Tables = PRIMITIVES) -> dict[str, int]:
    """``next_block`` for several series of one period, taken in the order given (the
    callers' lock order); ``{series: first number}``. One statement on PostgreSQL."""
    if any(count < 1 for _series, count in blocks):
        raise ValueError("a block holds at least one number")
    if not is_postgresql(conn):
        return {series: await next_block(conn, series, period, count, tables=tables)
                for series, count in blocks}
    rows = await pg_fetch(conn, pg_sql(_PG_NEXT_BLOCKS, tables),
                          [series for series, _c in blocks], [period] * len(blocks),
                          [count for _s, count in blocks])
    counts = dict(blocks)
    return {r["series"]: int(r["last_value"]) - counts[r["series"]] + 1 for r in rows}


_PG_NEXT_BLOCKS = (
    "INSERT INTO {p}sequences (series, period, last_value) "
    "SELECT * FROM unnest($1::VARCHAR(40)[], $2::VARCHAR(20)[], $3::BIGINT[]) "
    "ON CONFLICT (series, period) DO UPDATE "
    "SET last_value = {p}sequences.last_value + excluded.last_value "
    "RETURNING series, last_value"
)


def _next_block(d: Dialect, t: Tables) -> Any:
    sequences = t.sequences
    stmt = (postgresql.insert(sequences) if d.name == "postgresql" else sqlite.insert(sequences)
            ).values(series=bindparam("series"), period=bindparam("period"),
                     last_value=bindparam("count", type_=BigInteger))
    return stmt.on_conflict_do_update(
        index_elements=[sequences.c.series, sequences.c.period],
        set_={"last_value": sequences.c.last_value + stmt.excluded.last_value},
    ).returning(sequences.c.last_value)


# Built and compiled once (``store.prepared``): the group-commit writer takes two blocks
# per batch.
_NEXT_BLOCK = Query("next_block", _next_block)
