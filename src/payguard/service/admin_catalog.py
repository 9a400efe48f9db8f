"""Programs with their class-rep seat usage and products with their stock, per state."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from payguard.service.catalog import list_products, list_programs
from payguard.store.schema import reservations, stock_items

__all__ = ["products_with_stock", "programs_with_seats"]


async def programs_with_seats(conn: AsyncConnection) -> list[dict[str, Any]]:
    """``class_rep_taken`` counts held and kept seats; ``held`` are the ones still waiting
    for a checkout to complete (released if it does not)."""
    held: dict[str, int] = {}
    for row in await conn.execute(
        select(reservations.c.capacity_key, func.sum(reservations.c.quantity))
        .where(reservations.c.state == "held", reservations.c.capacity_key.like("program:%"))
        .group_by(reservations.c.capacity_key)):
        held[str(row[0])] = int(row[1] or 0)
    out = []
    for program in await list_programs(conn):
        h = held.get(f"program:{program['id']}:class_rep", 0)
        out.append({**program, "seats_held": h, "seats_sold": program["class_rep_taken"] - h,
                    "seats_left": program["class_rep_limit"] - program["class_rep_taken"]})
    return out


async def products_with_stock(conn: AsyncConnection) -> list[dict[str, Any]]:
    """``stock`` is what can still be bought; items by state add up to ``items_total``."""
    by_state: dict[str, dict[str, int]] = {}
    for row in await conn.execute(
        select(stock_items.c.product_id, stock_items.c.state, func.count())
        .group_by(stock_items.c.product_id, stock_items.c.state)):
        by_state.setdefault(str(row[0]), {})[str(row[1])] = int(row[2])
    out = []
    for product in await list_products(conn):
        states = by_state.get(product["id"], {})
        counts = {s: states.get(s, 0) for s in ("available", "reserved", "assigned")}
        out.append({**product, "items_available": counts["available"],
                    "items_reserved": counts["reserved"], "items_assigned": counts["assigned"],
                    "items_total": sum(counts.values())})
    return out
