"""Products with stock (digital items) and programs with class-rep seats."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from payguard import capacity, ledger
from payguard.clock import utcnow
from payguard.errors import Conflict, NotFound
from payguard.ids import new_id
from payguard.service.views import product_view, program_view
from payguard.store.schema import capacities, products, programs, stock_items

__all__ = [
    "add_items",
    "create_product",
    "create_program",
    "get_product",
    "get_program",
    "list_products",
    "list_programs",
    "program_capacity_key",
    "stock_capacity_key",
]


def stock_capacity_key(product_id: str) -> str:
    return f"product:{product_id}:stock"


def program_capacity_key(program_id: str) -> str:
    return f"program:{program_id}:class_rep"


async def _insert_items(conn: AsyncConnection, product_id: str, items: list[str]) -> None:
    if len(set(items)) != len(items):
        raise Conflict("the same item appears twice in the request")
    if not items:
        return
    try:
        async with conn.begin_nested():
            await conn.execute(insert(stock_items), [
                {"product_id": product_id, "value": v, "state": "available"} for v in items
            ])
    except IntegrityError as exc:
        raise Conflict("an item with this value already exists for the product") from exc
    await capacity.grow(conn, stock_capacity_key(product_id), len(items))


async def create_product(conn: AsyncConnection, *, sku: str, name: str, price: int,
                         currency: str, items: list[str]) -> dict[str, Any]:
    if await conn.scalar(select(products.c.id).where(products.c.sku == sku)) is not None:
        raise Conflict(f"a product with sku {sku!r} already exists")
    product_id = new_id("prd")
    try:
        async with conn.begin_nested():
            await conn.execute(insert(products).values(
                id=product_id, sku=sku, name=name, price=price, currency=currency,
                created_at=utcnow(),
            ))
    except IntegrityError as exc:
        raise Conflict(f"a product with sku {sku!r} already exists") from exc
    await capacity.create(conn, stock_capacity_key(product_id), 0)
    await ledger.ensure_platform_accounts(conn, currency)
    await _insert_items(conn, product_id, items)
    return await get_product(conn, product_id)


async def add_items(conn: AsyncConnection, product_id: str, items: list[str]) -> dict[str, Any]:
    await get_product(conn, product_id)
    await _insert_items(conn, product_id, items)
    return await get_product(conn, product_id)


def _product_query() -> Any:
    cap = capacities
    return select(products, (cap.c.limit - cap.c.taken).label("stock")).join(
        cap, cap.c.key == ("product:" + products.c.id + ":stock")
    )


async def get_product(conn: AsyncConnection, product_id: str) -> dict[str, Any]:
    row = (await conn.execute(_product_query().where(products.c.id == product_id))).first()
    if row is None:
        raise NotFound(f"no product {product_id!r}")
    return product_view(row, int(row.stock))


async def list_products(conn: AsyncConnection) -> list[dict[str, Any]]:
    rows = await conn.execute(_product_query().order_by(products.c.created_at, products.c.id))
    return [product_view(r, int(r.stock)) for r in rows]


async def create_program(conn: AsyncConnection, *, title: str, full_price: int, currency: str,
                         class_rep_limit: int, class_rep_discount: int,
                         early_bird_discount: int,
                         early_bird_deadline: datetime | None) -> dict[str, Any]:
    program_id = new_id("prg")
    key = program_capacity_key(program_id)
    await capacity.create(conn, key, class_rep_limit)
    await ledger.ensure_platform_accounts(conn, currency)
    await conn.execute(insert(programs).values(
        id=program_id, title=title, full_price=full_price, currency=currency,
        class_rep_limit=class_rep_limit, class_rep_discount=class_rep_discount,
        early_bird_discount=early_bird_discount, early_bird_deadline=early_bird_deadline,
        capacity_key=key, created_at=utcnow(),
    ))
    return await get_program(conn, program_id)


def _program_query() -> Any:
    return select(programs, capacities.c.taken).join(
        capacities, capacities.c.key == programs.c.capacity_key
    )


async def get_program(conn: AsyncConnection, program_id: str) -> dict[str, Any]:
    row = (await conn.execute(_program_query().where(programs.c.id == program_id))).first()
    if row is None:
        raise NotFound(f"no program {program_id!r}")
    return program_view(row, int(row.taken))


async def list_programs(conn: AsyncConnection) -> list[dict[str, Any]]:
    rows = await conn.execute(_program_query().order_by(programs.c.created_at, programs.c.id))
    return [program_view(r, int(r.taken)) for r in rows]
