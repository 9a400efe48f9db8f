"""wallet: concurrent purchases on one wallet; winners = balance // price, balance exact."""

from __future__ import annotations

from payguard.race.client import Reply, new_key
from payguard.race.scenarios.base import Scenario, expect_outcomes, gather, register
from payguard.race.types import Invariant

__all__ = ["Wallet"]

PRICE = 100
REMAINDER = 50  # left in the wallet: a price that does not divide the balance


@register
class Wallet(Scenario):
    name = "wallet"
    summary = "concurrent purchases on one wallet: winners = balance / price, balance exact"
    routes = (("POST", "/api/purchases"), ("GET", "/api/wallet"))
    default_requests = 40

    async def setup(self) -> None:
        self.winners = self.n // 2
        self.funded = self.winners * PRICE + REMAINDER
        self.user = await self.api.user(self.funded)
        product = await self.api.product(PRICE, items=self.n)
        self.product_id = str(product["id"])

    async def _buy(self) -> Reply:
        return await self.request(
            "purchase", "POST", "/api/purchases", token=self.user.token,
            json_body={"product_id": self.product_id, "quantity": 1}, key=new_key(),
        )

    async def fire(self) -> None:
        self.replies = await gather(self._buy for _ in range(self.n))
        self.receipts = [
            str(r.body["receipt_number"]) for r in self.replies
            if r.status == 201 and isinstance(r.body, dict) and r.body.get("receipt_number")
        ]

    async def verify(self) -> list[Invariant]:
        accepted = sum(1 for r in self.replies if r.status == 201)
        charged = sum(
            int(r.body.get("amount", PRICE)) if isinstance(r.body, dict) else PRICE
            for r in self.replies if r.status == 201
        )
        balance = await self.api.balance(self.user)
        expected = self.funded - charged
        if balance == expected and balance == REMAINDER:
            money = Invariant(
                "final balance exact", True,
                f"funded {self.funded}, {accepted} x {PRICE} charged, balance {balance}",
            )
        else:
            lost = balance - expected
            money = Invariant(
                "final balance exact", False,
                f"funded {self.funded}, {accepted} purchases charged {charged}: expected "
                f"balance {expected} (and {REMAINDER} = funded mod price), got {balance}"
                + (f": {lost} of the money paid never left the wallet" if lost > 0 else ""),
            )
        return [
            expect_outcomes(
                "winners = balance / price", self.replies,
                {"201": self.winners, "400 INSUFFICIENT_BALANCE": self.n - self.winners},
            ),
            money,
            Invariant("balance never negative", balance >= 0, f"final balance {balance}"),
        ]
