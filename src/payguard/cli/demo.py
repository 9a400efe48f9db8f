"""``serve --demo``: a demo user with a funded wallet, products with stock, a program."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

from sqlalchemy import select

from payguard.clock import utcnow
from payguard.config import Settings
from payguard.private_files import write_private
from payguard.service import catalog, users, wallets
from payguard.store.engine import create_engine
from payguard.store.migrate import migrate
from payguard.store.schema import users as users_table
from payguard.store.uow import Database, UnitOfWork

__all__ = ["ensure_demo_data"]

DEMO_EMAIL = "demo@payguard.local"


async def ensure_demo_data(settings: Settings) -> dict[str, Any]:
    """Create the demo data once; later starts read the saved tokens from the data dir."""
    saved = settings.data_dir / "demo.json"
    url = settings.resolved_database_url
    await migrate(url)
    db = Database(create_engine(url))
    try:
        async with db.unit_of_work(readonly=True) as uow:
            exists = await uow.conn.scalar(
                select(users_table.c.id).where(users_table.c.email == DEMO_EMAIL))
        if exists and saved.exists():
            return dict(json.loads(saved.read_text()))

        async def create(uow: UnitOfWork) -> dict[str, Any]:
            cur = settings.currency
            user = await users.create_user(uow, email=DEMO_EMAIL, name="Demo User", currency=cur)
            await wallets.adjust(uow, user_id=user["id"], currency=cur, amount=50_000,
                                 set_balance=None, reason="demo funds")
            ebook = await catalog.create_product(
                uow, sku="EBOOK-RACES", name="Race Conditions in Payments (e-book)", price=1_500,
                currency=cur, items=[f"EBOOK-KEY-{i:04d}" for i in range(1, 51)])
            licence = await catalog.create_product(
                uow, sku="LICENSE-PRO", name="payguard Pro licence", price=9_900,
                currency=cur, items=[f"PRO-{i:04d}-XXXX" for i in range(1, 6)])
            program = await catalog.create_program(
                uow, title="Payments Engineering Bootcamp", full_price=120_000, currency=cur,
                class_rep_limit=10, class_rep_discount=30_000, early_bird_discount=15_000,
                early_bird_deadline=utcnow() + timedelta(days=30))
            await uow.commit()
            return {"user": user, "products": [ebook["id"], licence["id"]],
                    "program": program["id"]}

        demo = await db.run(create)
        write_private(saved, json.dumps(demo))
        return demo
    finally:
        await db.dispose()
