"""What a pending purchase holds (a class-rep seat, stock items) and how it is let go.

A checkout reserves in one short transaction; completion keeps; cancel, failure, expiry
and refunds release. Each transition is a conditional update on the reservation, so it
happens once however many webhooks, reconcilers and users race to make it.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import and_, update
from sqlalchemy.ext.asyncio import AsyncConnection

from payguard import capacity
from payguard.errors import ClassRepLimitReached, OutOfStock
from payguard.service.catalog import program_capacity_key, stock_capacity_key
from payguard.service.purchases import assign_items
from payguard.store.schema import reservations, stock_items

__all__ = ["hold_keys", "keep_holds", "release_holds", "reserve_holds"]


async def reserve_holds(conn: AsyncConnection, *, purchase_id: str, product_id: str | None,
                        program_id: str | None, is_class_rep: bool, quantity: int,
                        expires_at: datetime | None, now: datetime, keep_now: bool = False
                        ) -> list[str]:
    """Reserve what the purchase needs; raises the contract's 409s when it is gone."""
    if program_id and is_class_rep:
        if not await capacity.reserve(conn, program_capacity_key(program_id), purchase_id, 1,
                                      expires_at=expires_at, keep_now=keep_now, now=now):
            raise ClassRepLimitReached("every class-rep seat is taken or reserved")
    if product_id:
        if not await capacity.reserve(conn, stock_capacity_key(product_id), purchase_id,
                                      quantity, expires_at=expires_at, keep_now=keep_now,
                                      now=now):
            raise OutOfStock(f"fewer than {quantity} items left")
        return await assign_items(conn, product_id, purchase_id, quantity,
                                  state="assigned" if keep_now else "reserved")
    return []


async def keep_holds(conn: AsyncConnection, purchase: Any, now: datetime) -> None:
    """Make the holds permanent on payment; re-take them if they lapsed meanwhile.

    Raises ``ClassRepLimitReached`` / ``OutOfStock`` when a lapsed hold can't be re-taken
    (the seat went to someone else): the caller then refunds the late payment.
    """
    if purchase.program_id and purchase.is_class_rep:
        key = program_capacity_key(purchase.program_id)
        if not await capacity.keep(conn, key, purchase.id, now):
            await _retake(conn, purchase, now)
            return
    if purchase.product_id:
        key = stock_capacity_key(purchase.product_id)
        if not await capacity.keep(conn, key, purchase.id, now):
            await _retake(conn, purchase, now)
            return
        await conn.execute(
            update(stock_items)
            .where(and_(stock_items.c.purchase_id == purchase.id,
                        stock_items.c.state == "reserved"))
            .values(state="assigned", assigned_at=now)
        )


async def _retake(conn: AsyncConnection, purchase: Any, now: datetime) -> None:
    # The old reservation row is "released"; a new one would collide on (capacity,
    # purchase), so revive it through a fresh conditional take of the capacity.
    for key, qty in _keys(purchase):
        if not await capacity.take(conn, key, qty):
            if key.startswith("program:"):
                raise ClassRepLimitReached("the seat was given to someone else meanwhile")
            raise OutOfStock("the items were sold to someone else meanwhile")
        await conn.execute(
            update(reservations)
            .where(reservations.c.capacity_key == key, reservations.c.purchase_id == purchase.id)
            .values(state="kept", expires_at=None, updated_at=now)
        )
        if purchase.product_id and key.startswith("product:"):
            await assign_items(conn, purchase.product_id, purchase.id, qty)


def _keys(purchase: Any) -> list[tuple[str, int]]:
    out: list[tuple[str, int]] = []
    if purchase.program_id and purchase.is_class_rep:
        out.append((program_capacity_key(purchase.program_id), 1))
    if purchase.product_id:
        out.append((stock_capacity_key(purchase.product_id), int(purchase.quantity)))
    return out


def hold_keys(purchase: Any) -> list[str]:
    """The capacity counters a purchase holds units of (for ``lock_shared_rows``)."""
    return [key for key, _qty in _keys(purchase)]


async def release_holds(conn: AsyncConnection, purchase: Any, now: datetime) -> None:
    """Give back the seat and the unsold items of a purchase, exactly once."""
    for key, _qty in _keys(purchase):
        freed = await capacity.release(conn, key, purchase.id, now)
        if freed and key.startswith("product:"):
            await conn.execute(
                update(stock_items)
                .where(stock_items.c.purchase_id == purchase.id,
                       stock_items.c.state == "reserved")
                .values(state="available", purchase_id=None, assigned_at=None)
            )
