"""stock: more buyers than items; each item sold once, losers keep their money."""

from __future__ import annotations

from collections import Counter
from functools import partial

from payguard.race.api import User
from payguard.race.client import Reply, new_key
from payguard.race.scenarios.base import Scenario, expect_outcomes, gather, register
from payguard.race.types import Invariant

__all__ = ["Stock"]

PRICE = 250


@register
class Stock(Scenario):
    name = "stock"
    summary = "buyers race for fewer items: each item sold once, no oversell"
    routes = (("POST", "/api/purchases"), ("GET", "/api/products/{id}"), ("GET", "/api/wallet"))
    default_requests = 30

    async def setup(self) -> None:
        self.items = max(1, self.n // 3)
        self.users: list[User] = [await self.api.user(PRICE) for _ in range(self.n)]
        product = await self.api.product(PRICE, items=self.items)
        self.product_id = str(product["id"])

    async def _buy(self, user: User) -> tuple[User, Reply]:
        return user, await self.request(
            "purchase", "POST", "/api/purchases", token=user.token,
            json_body={"product_id": self.product_id, "quantity": 1}, key=new_key(),
        )

    async def fire(self) -> None:
        self.replies = await gather(partial(self._buy, u) for u in self.users)
        self.receipts = [
            str(r.body["receipt_number"]) for _, r in self.replies
            if r.status == 201 and isinstance(r.body, dict) and r.body.get("receipt_number")
        ]

    async def verify(self) -> list[Invariant]:
        replies = [r for _, r in self.replies]
        sold: list[str] = []
        for r in replies:
            if r.status == 201 and isinstance(r.body, dict):
                sold.extend(str(i) for i in r.body.get("items") or [])
        twice = {i: c for i, c in Counter(sold).items() if c > 1}
        product = await self.api.get(f"/api/products/{self.product_id}", self.users[0].token)
        stock_left = product.get("stock") if isinstance(product, dict) else None
        wrong = []
        for user, reply in self.replies:
            expected = 0 if reply.status == 201 else PRICE
            actual = await self.api.balance(user)
            if actual != expected:
                wrong.append(f"{user.id} ({reply.status}): expected {expected}, got {actual}")
        return [
            expect_outcomes(
                "winners = items", replies,
                {"201": self.items, "409 OUT_OF_STOCK": self.n - self.items},
            ),
            Invariant(
                "each item sold once",
                not twice and len(sold) == self.items,
                f"{len(sold)} items handed out, {len(set(sold))} distinct"
                + (f"; sold twice: {sorted(twice)[:5]}" if twice else ""),
            ),
            Invariant("stock left = 0", stock_left == 0,
                      f"product stock after the race: {stock_left}"),
            Invariant(
                "winners charged, losers untouched", not wrong,
                "; ".join(wrong[:5]) or f"{len(self.users)} wallets exact",
            ),
        ]
