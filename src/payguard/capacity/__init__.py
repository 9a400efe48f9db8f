"""Capacity counters for seats and stock, with per-purchase reservations.

Strategy: a conditional single-statement increment,
``UPDATE capacities SET taken = taken + :q WHERE key = :k AND taken + :q <= limit``,
decides who gets the last seat; the ``CHECK (taken <= limit)`` backs it up. Each hold is a
``reservations`` row whose state moves ``held -> kept | released`` through conditional
updates, so a seat is released exactly once however many cancels, expiries, webhooks and
reconcilers race to release it.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import and_, case, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from payguard.clock import utcnow
from payguard.store.prepared import insert_rows, is_postgresql, pg_fetch, pg_sql
from payguard.store.schema import PRIMITIVES
from payguard.store.tables import Tables

__all__ = [
    "Capacity",
    "create",
    "expired_holds",
    "get",
    "grow",
    "keep",
    "release",
    "reserve",
    "reserve_many",
    "take",
]


class Capacity:
    """A counter as read: its key, its limit and how many units are taken."""

    __slots__ = ("key", "limit", "taken")

    def __init__(self, key: str, limit: int, taken: int) -> None:
        self.key, self.limit, self.taken = key, limit, taken

    @property
    def available(self) -> int:
        """Units still free."""
        return self.limit - self.taken


async def create(conn: AsyncConnection, key: str, limit: int, *,
                 tables: Tables = PRIMITIVES) -> None:
    """A new counter of ``limit`` units, none taken (a duplicate key is an error)."""
    capacities = tables.capacities
    await conn.execute(insert(capacities).values(key=key, limit=limit, taken=0))


async def get(conn: AsyncConnection, key: str, *, tables: Tables = PRIMITIVES) -> Capacity | None:
    """The counter ``key`` as it is now (None: no such counter)."""
    capacities = tables.capacities
    row = (await conn.execute(select(capacities).where(capacities.c.key == key))).first()
    return None if row is None else Capacity(row.key, int(row.limit), int(row.taken))


async def grow(conn: AsyncConnection, key: str, by: int, *, tables: Tables = PRIMITIVES) -> None:
    """Raise the limit (new stock arrived)."""
    capacities = tables.capacities
    await conn.execute(
        update(capacities).where(capacities.c.key == key)
        .values(limit=capacities.c.limit + by)
    )


async def take(conn: AsyncConnection, key: str, quantity: int, *,
               tables: Tables = PRIMITIVES) -> bool:
    """The conditional increment itself: True if ``quantity`` units were free and are now
    taken. Callers record what they took (``reserve`` does, in ``reservations``)."""
    capacities = tables.capacities
    taken = (await conn.execute(
        update(capacities)
        .where(capacities.c.key == key, capacities.c.taken + quantity <= capacities.c.limit)
        .values(taken=capacities.c.taken + quantity)
        .returning(capacities.c.taken)
    )).scalar_one_or_none()
    return taken is not None


async def reserve(
    conn: AsyncConnection,
    key: str,
    purchase_id: str,
    quantity: int = 1,
    *,
    expires_at: datetime | None = None,
    keep_now: bool = False,
    now: datetime | None = None,
    tables: Tables = PRIMITIVES,
) -> bool:
    """Take ``quantity`` units for ``purchase_id``; False when not enough are left."""
    reservations = tables.reservations
    if not await take(conn, key, quantity, tables=tables):
        return False
    now = now or utcnow()
    await conn.execute(insert(reservations).values(
        capacity_key=key, purchase_id=purchase_id, quantity=quantity,
        state="kept" if keep_now else "held", expires_at=expires_at,
        created_at=now, updated_at=now,
    ))
    return True


async def reserve_many(
    conn: AsyncConnection,
    holds: list[tuple[str, str, int]],
    *,
    keep_now: bool = False,
    now: datetime | None = None,
    tables: Tables = PRIMITIVES,
) -> None:
    """Batch form of ``reserve`` for holds already decided against counters the caller
    locked (``store.lock_order.lock_capacities``): one conditional increment of each
    counter by its total and one multi-row insert of the reservations, whatever the number
    of holds. ``holds`` are ``(key, purchase_id, quantity)``. Raises ``ValueError`` if a
    counter refused its total (the caller's decision was wrong: roll back)."""
    if not holds:
        return
    capacities, reservations = tables.capacities, tables.reservations
    totals: dict[str, int] = {}
    for key, _purchase_id, quantity in holds:
        totals[key] = totals.get(key, 0) + quantity
    if is_postgresql(conn):
        keys = list(totals)
        updated = [r["key"] for r in await pg_fetch(
            conn, pg_sql(_PG_TAKE, tables), keys, [totals[k] for k in keys])]
    else:
        by_key = case(totals, value=capacities.c.key)
        updated = list((await conn.execute(
            update(capacities)
            .where(capacities.c.key.in_(list(totals)),
                   capacities.c.taken + by_key <= capacities.c.limit)
            .values(taken=capacities.c.taken + by_key)
            .returning(capacities.c.key)
        )).scalars().all())
    if len(updated) != len(totals):
        raise ValueError(f"capacity refused a batch total: {sorted(set(totals) - set(updated))}")
    now = now or utcnow()
    await insert_rows(conn, reservations, [
        {"capacity_key": key, "purchase_id": purchase_id, "quantity": quantity,
         "state": "kept" if keep_now else "held", "expires_at": None,
         "created_at": now, "updated_at": now}
        for key, purchase_id, quantity in holds
    ])


# Each counter's total in one statement with one SQL text (asyncpg prepares it once).
_PG_TAKE = (
    'UPDATE {p}capacities AS c SET taken = c.taken + v.n '
    'FROM unnest($1::VARCHAR(100)[], $2::INTEGER[]) AS v(key, n) '
    'WHERE c.key = v.key AND c.taken + v.n <= c."limit" RETURNING c.key'
)


async def keep(conn: AsyncConnection, key: str, purchase_id: str,
               now: datetime | None = None, *, tables: Tables = PRIMITIVES) -> bool:
    """Turn a hold into a permanent take (payment completed). True if it was held."""
    reservations = tables.reservations
    result = await conn.execute(
        update(reservations)
        .where(reservations.c.capacity_key == key, reservations.c.purchase_id == purchase_id,
               reservations.c.state == "held")
        .values(state="kept", expires_at=None, updated_at=now or utcnow())
    )
    return result.rowcount == 1


async def release(conn: AsyncConnection, key: str, purchase_id: str,
                  now: datetime | None = None, *, tables: Tables = PRIMITIVES) -> int:
    """Give the units of ``purchase_id`` back, exactly once. Returns how many were freed."""
    capacities, reservations = tables.capacities, tables.reservations
    quantity = (await conn.execute(
        update(reservations)
        .where(reservations.c.capacity_key == key, reservations.c.purchase_id == purchase_id,
               reservations.c.state.in_(("held", "kept")))
        .values(state="released", updated_at=now or utcnow())
        .returning(reservations.c.quantity)
    )).scalar_one_or_none()
    if quantity is None:
        return 0
    await conn.execute(
        update(capacities).where(capacities.c.key == key)
        .values(taken=capacities.c.taken - quantity)
    )
    return int(quantity)


async def expired_holds(conn: AsyncConnection, now: datetime,
                        limit: int = 100, *, tables: Tables = PRIMITIVES) -> list[tuple[str, str]]:
    """(capacity_key, purchase_id) of holds past their expiry, oldest first."""
    reservations = tables.reservations
    rows = await conn.execute(
        select(reservations.c.capacity_key, reservations.c.purchase_id)
        .where(and_(reservations.c.state == "held", reservations.c.expires_at < now))
        .order_by(reservations.c.expires_at)
        .limit(limit)
    )
    return [(r.capacity_key, r.purchase_id) for r in rows]
