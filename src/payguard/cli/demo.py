"""``serve --demo``: a demo user with a funded wallet, products with stock, a program."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

from sqlalchemy import select

from payguard.bootstrap import open_database
from payguard.clock import utcnow
from payguard.config import Settings
from payguard.private_files import write_private
from payguard.service import catalog, users, wallets
from payguard.store.schema import users as users_table
from payguard.store.uow import UnitOfWork

__all__ = ["ensure_demo_data"]

DEMO_EMAIL = "demo@payguard.local"


async def ensure_demo_data(settings: Settings) -> dict[str, Any]:
    """Create the demo data once; later starts read the saved tokens from the data dir."""
    saved = settings.data_dir / "demo.json"
    db = await open_database(settings)
    try:
        async with db.read() as uow:
            exists = await uow.conn.scalar(
                select(users_table.c.id).where(users_table.c.email == DEMO_EMAIL))
        if exists and saved.exists():
            return dict(json.loads(saved.read_text()))

        async def create(uow: UnitOfWork) -> dict[str, Any]:
            conn, cur = uow.conn, settings.currency
            user = await users.create_user(conn, email=DEMO_EMAIL, name="Demo User", currency=cur)
            await wallets.adjust(conn, user_id=user["id"], currency=cur, amount=50_000,
                                 set_balance=None, reason="demo funds")
            ebook = await catalog.create_product(
                conn, sku="EBOOK-RACES", name="Race Conditions in Payments (e-book)", price=1_500,
                currency=cur, items=[f"EBOOK-KEY-{i:04d}" for i in range(1, 51)])
            licence = await catalog.create_product(
                conn, sku="LICENSE-PRO", name="payguard Pro licence", price=9_900,
                currency=cur, items=[f"PRO-{i:04d}-XXXX" for i in range(1, 6)])
            program = await catalog.create_program(
                conn, title="Payments Engineering Bootcamp", full_price=120_000, currency=cur,
                class_rep_limit=10, class_rep_discount=30_000, early_bird_discount=15_000,
                early_bird_deadline=utcnow() + timedelta(days=30))
            return {"user": user, "products": [ebook["id"], licence["id"]],
                    "program": program["id"]}

        demo = await db.transaction(create)
        write_private(saved, json.dumps(demo))
        return demo
    finally:
        await db.dispose()
