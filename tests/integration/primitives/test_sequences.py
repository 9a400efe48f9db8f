"""Gapless sequences: concurrent takers, rollbacks that give numbers back, new periods."""

from __future__ import annotations

import asyncio

from payguard import sequences
from payguard.store.uow import Database, UnitOfWork


class PaymentFailed(Exception):
    """Raised after a number was taken: the transaction rolls back and gives it back."""


async def test_concurrent_takers_with_rollbacks_leave_no_gap(database: Database) -> None:
    async def take(i: int) -> int | None:
        async def tx(uow: UnitOfWork) -> int:
            value = await sequences.next_value(uow.conn, "receipt", "2026")
            await asyncio.sleep(0)  # let others queue on the row
            if i % 4 == 0:
                raise PaymentFailed
            return value

        try:
            return await database.transaction(tx)
        except PaymentFailed:
            return None

    results = await asyncio.gather(*(take(i) for i in range(80)))
    committed = sorted(v for v in results if v is not None)
    assert len(committed) == 60
    assert committed == list(range(1, 61))
    async with database.read() as uow:
        assert await sequences.peek(uow.conn, "receipt", "2026") == 60


async def test_each_period_starts_at_one(database: Database) -> None:
    async def tx(uow: UnitOfWork) -> list[int]:
        out = [await sequences.next_value(uow.conn, "receipt", p)
               for p in ("2025", "2025", "2026", "2025", "2026")]
        return out

    assert await database.transaction(tx) == [1, 2, 1, 3, 2]


def test_format_number() -> None:
    from datetime import UTC, datetime

    at = datetime(2026, 3, 1, tzinfo=UTC)
    assert sequences.format_number("SC{year}{seq:06d}", at=at, seq=42) == "SC2026000042"
    assert sequences.format_number("R-{year}-{month:02d}-{seq}", at=at, seq=7) == "R-2026-03-7"
