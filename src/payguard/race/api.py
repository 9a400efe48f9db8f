"""Typed helpers for the admin and user calls scenarios make while setting up and checking."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from payguard.race.client import RaceClient, Reply, new_key

__all__ = ["Api", "SetupFailed", "User"]


class SetupFailed(Exception):
    """A setup or end-state call answered something other than what the contract promises."""


@dataclass(frozen=True)
class User:
    id: str
    token: str


def _expect(reply: Reply, what: str, *statuses: int) -> Any:
    if reply.status not in statuses:
        detail = reply.error or reply.raw[:300].decode(errors="replace")
        raise SetupFailed(f"{what}: expected {statuses}, got {reply.status}: {detail}")
    return reply.body


class Api:
    """Admin setup (users, products, programs, money) and end-state reads.

    Every setup POST carries an ``Idempotency-Key``: retried after a killed instance, it is
    replayed instead of creating a second user (or failing on a taken email).
    """

    def __init__(self, client: RaceClient) -> None:
        self.client = client
        # One run id per harness run keeps emails and skus unique on a shared server.
        self.run = uuid.uuid4().hex[:8]
        self._serial = 0

    def _unique(self) -> str:
        self._serial += 1
        return f"{self.run}-{self._serial}"

    async def user(self, balance: int = 0) -> User:
        tag = self._unique()
        body = _expect(
            await self.client.request(
                "POST", "/api/admin/users",
                json_body={"email": f"race-{tag}@example.test", "name": f"race {tag}"},
                key=new_key(),
            ),
            "create user", 201,
        )
        user = User(id=str(body["id"]), token=str(body["token"]))
        if balance:
            await self.adjust(user, balance)
        return user

    async def adjust(self, user: User, amount: int) -> int:
        body = _expect(
            await self.client.request(
                "POST", f"/api/admin/wallets/{user.id}/adjustments",
                json_body={"amount": amount, "reason": "race funding"}, key=new_key(),
            ),
            "fund wallet", 201,
        )
        return int(body["balance"])

    async def product(self, price: int, items: int) -> dict[str, Any]:
        tag = self._unique()
        body = _expect(
            await self.client.request(
                "POST", "/api/admin/products",
                json_body={
                    "sku": f"RACE-{tag}", "name": f"race product {tag}", "price": price,
                    "items": [f"item-{tag}-{i}" for i in range(items)],
                },
                key=new_key(),
            ),
            "create product", 201,
        )
        return dict(body)

    async def program(self, full_price: int, class_rep_limit: int) -> dict[str, Any]:
        tag = self._unique()
        body = _expect(
            await self.client.request(
                "POST", "/api/admin/programs",
                json_body={
                    "title": f"race program {tag}", "full_price": full_price,
                    "class_rep_limit": class_rep_limit, "class_rep_discount": 0,
                    "early_bird_discount": 0,
                },
                key=new_key(),
            ),
            "create program", 201,
        )
        return dict(body)

    async def buy(self, user: User, product_id: str) -> dict[str, Any]:
        """A setup purchase that must succeed."""
        return dict(_expect(
            await self.client.request(
                "POST", "/api/purchases", token=user.token,
                json_body={"product_id": product_id, "quantity": 1}, key=new_key(),
            ),
            "setup purchase", 201,
        ))

    async def balance(self, user: User) -> int:
        body = _expect(
            await self.client.request("GET", "/api/wallet", token=user.token), "read wallet", 200
        )
        return int(body["balance"])

    async def get(self, path: str, token: str | None = None) -> Any:
        return _expect(await self.client.request("GET", path, token=token), f"GET {path}", 200)

    async def audit(self) -> dict[str, Any]:
        return dict(await self.get("/api/admin/audit"))
