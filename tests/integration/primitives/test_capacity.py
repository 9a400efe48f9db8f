"""Capacity counters raced directly on SQLite and PostgreSQL: exactly ``limit`` winners,
each hold released exactly once however many releases race, a kept seat stays kept."""

from __future__ import annotations

import asyncio

from sqlalchemy import func, select

from payguard import capacity
from payguard.store.schema import capacities, reservations
from payguard.store.uow import Database, UnitOfWork

KEY = "program:prg_t:class_rep"


async def _counter(db: Database) -> tuple[int, int]:
    async with db.read() as uow:
        row = (await uow.conn.execute(select(capacities).where(capacities.c.key == KEY))).one()
        return int(row.limit), int(row.taken)


async def _states(db: Database) -> dict[str, int]:
    async with db.read() as uow:
        rows = await uow.conn.execute(
            select(reservations.c.state, func.count()).where(reservations.c.capacity_key == KEY)
            .group_by(reservations.c.state))
        return {r[0]: int(r[1]) for r in rows}


async def test_the_last_seats_go_to_exactly_limit_buyers(database: Database) -> None:
    await database.transaction(lambda uow: capacity.create(uow.conn, KEY, 5))

    async def buy(i: int) -> bool:
        async def tx(uow: UnitOfWork) -> bool:
            got = await capacity.reserve(uow.conn, KEY, f"pur_{i}", 1)
            await asyncio.sleep(0)  # let the others pile up on the row
            return got
        return await database.transaction(tx)

    results = await asyncio.gather(*(buy(i) for i in range(30)))
    assert results.count(True) == 5
    assert await _counter(database) == (5, 5)
    assert await _states(database) == {"held": 5}
    # Full: a further reserve of 1 fails, a reserve larger than the limit fails too.
    assert not await database.transaction(lambda uow: capacity.reserve(uow.conn, KEY, "x", 1))


async def test_a_hold_is_released_once_however_many_releases_race(database: Database) -> None:
    await database.transaction(lambda uow: capacity.create(uow.conn, KEY, 3))
    for i in range(3):
        assert await database.transaction(
            lambda uow, i=i: capacity.reserve(uow.conn, KEY, f"pur_{i}", 1))  # type: ignore[misc]

    # Cancel, expiry, webhook and reconciler all try to release pur_0's seat at once.
    freed = await asyncio.gather(*(database.transaction(
        lambda uow: capacity.release(uow.conn, KEY, "pur_0")) for _ in range(12)))
    assert sorted(freed) == [0] * 11 + [1]
    assert await _counter(database) == (3, 2)
    assert await _states(database) == {"held": 2, "released": 1}


async def test_keep_and_release_race_for_one_hold(database: Database) -> None:
    """A payment (keep) racing a refund or expiry (release) of the same hold: release frees
    held and kept units alike, so whichever runs first, the seat is freed exactly once and
    the counter matches the reservation rows."""
    await database.transaction(lambda uow: capacity.create(uow.conn, KEY, 1))
    assert await database.transaction(lambda uow: capacity.reserve(uow.conn, KEY, "pur_a", 1))

    _kept, freed = await asyncio.gather(
        database.transaction(lambda uow: capacity.keep(uow.conn, KEY, "pur_a")),
        database.transaction(lambda uow: capacity.release(uow.conn, KEY, "pur_a")))
    assert freed == 1
    assert await _states(database) == {"released": 1}
    assert await _counter(database) == (1, 0)
    # Released for good: a late keep cannot revive it.
    assert not await database.transaction(lambda uow: capacity.keep(uow.conn, KEY, "pur_a"))


async def test_grow_raises_the_limit_for_new_stock(database: Database) -> None:
    await database.transaction(lambda uow: capacity.create(uow.conn, KEY, 0))
    assert not await database.transaction(lambda uow: capacity.take(uow.conn, KEY, 1))
    await database.transaction(lambda uow: capacity.grow(uow.conn, KEY, 2))
    results = await asyncio.gather(*(database.transaction(
        lambda uow: capacity.take(uow.conn, KEY, 1)) for _ in range(6)))
    assert results.count(True) == 2
    assert await _counter(database) == (2, 2)
