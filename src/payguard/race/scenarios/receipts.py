"""receipts: many concurrent wallet payments; every receipt number unique and gapless."""

from __future__ import annotations

from collections import Counter
from functools import partial

from payguard.race.api import User
from payguard.race.client import Reply, new_key
from payguard.race.numbers import check_contiguous, check_unique
from payguard.race.scenarios.base import Scenario, expect_outcomes, gather, register
from payguard.race.types import Invariant

__all__ = ["Receipts"]

PRICE = 100


@register
class Receipts(Scenario):
    name = "receipts"
    summary = "concurrent payments: receipt numbers unique and contiguous"
    routes = (("POST", "/api/purchases"), ("GET", "/api/wallet"))
    default_requests = 120

    async def setup(self) -> None:
        # Several payers, so the race is on the receipt counter, not on one wallet.
        payers = max(1, min(self.n // 4, 25))
        self.share = [self.n // payers + (1 if i < self.n % payers else 0) for i in range(payers)]
        self.users: list[User] = [await self.api.user(PRICE * s) for s in self.share]
        product = await self.api.product(PRICE, items=self.n)
        self.product_id = str(product["id"])

    async def _buy(self, user: User) -> tuple[User, Reply]:
        reply = await self.request(
            "purchase", "POST", "/api/purchases", token=user.token,
            json_body={"product_id": self.product_id, "quantity": 1}, key=new_key(),
        )
        return user, reply

    async def fire(self) -> None:
        buyers = [u for u, count in zip(self.users, self.share, strict=True) for _ in range(count)]
        self.ctx.rng.shuffle(buyers)
        self.replies = await gather(partial(self._buy, u) for u in buyers)
        self.receipts = [
            str(r.body["receipt_number"]) for _, r in self.replies
            if r.status == 201 and isinstance(r.body, dict) and r.body.get("receipt_number")
        ]

    async def verify(self) -> list[Invariant]:
        replies = [r for _, r in self.replies]
        accepted = sum(1 for r in replies if r.status == 201)
        invariants = [
            expect_outcomes("every payment accepted", replies, {"201": self.n}),
            Invariant(
                "one receipt per payment",
                len(self.receipts) == accepted,
                f"{accepted} payments accepted, {len(self.receipts)} carry a receipt number",
            ),
            check_unique(self.receipts),
        ]
        if self.ctx.exclusive:
            invariants.append(check_contiguous(self.receipts))
        invariants.append(await self._balances())
        return invariants

    async def _balances(self) -> Invariant:
        paid = Counter(u.id for u, r in self.replies if r.status == 201)
        wrong: list[str] = []
        for user, funded in zip(self.users, self.share, strict=True):
            expected = PRICE * funded - PRICE * paid[user.id]
            actual = await self.api.balance(user)
            if actual != expected:
                wrong.append(f"user {user.id}: expected {expected}, got {actual}")
        if wrong:
            return Invariant("wallets debited exactly", False, "; ".join(wrong[:5]))
        return Invariant(
            "wallets debited exactly", True, f"{len(self.users)} wallets match their payments"
        )
