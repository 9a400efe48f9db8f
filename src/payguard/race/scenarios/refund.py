"""refund: concurrent refunds of one purchase; exactly one refund, the money back once."""

from __future__ import annotations

from functools import partial

from payguard.race.api import User
from payguard.race.client import Reply, new_key
from payguard.race.scenarios.base import Scenario, expect_outcomes, gather, register
from payguard.race.types import Invariant

__all__ = ["Refund"]

PRICE = 300
PER_PURCHASE = 5  # concurrent refund requests aimed at the same purchase


@register
class Refund(Scenario):
    name = "refund"
    summary = "concurrent refunds of one purchase: one refund, money back once"
    routes = (
        ("POST", "/api/purchases"),
        ("POST", "/api/admin/purchases/{id}/refund"),
        ("GET", "/api/purchases/{id}"),
    )
    default_requests = 30

    @classmethod
    def min_requests(cls) -> int:
        return PER_PURCHASE

    async def setup(self) -> None:
        groups = max(1, self.n // PER_PURCHASE)
        self.n = groups * PER_PURCHASE
        product = await self.api.product(PRICE, items=groups)
        self.targets: list[tuple[User, str]] = []
        for _ in range(groups):
            user = await self.api.user(PRICE)
            purchase = await self.api.buy(user, str(product["id"]))
            self.targets.append((user, str(purchase["id"])))

    async def _refund(self, purchase_id: str) -> tuple[str, Reply]:
        return purchase_id, await self.request(
            "refund", "POST", f"/api/admin/purchases/{purchase_id}/refund",
            json_body={"reason": "race"}, key=new_key(),
        )

    async def fire(self) -> None:
        calls = [pid for _, pid in self.targets for _ in range(PER_PURCHASE)]
        self.ctx.rng.shuffle(calls)
        self.replies = await gather(partial(self._refund, pid) for pid in calls)

    async def verify(self) -> list[Invariant]:
        groups = len(self.targets)
        per: dict[str, list[Reply]] = {pid: [] for _, pid in self.targets}
        for pid, reply in self.replies:
            per[pid].append(reply)
        not_once = [
            pid for pid, rs in per.items() if sum(1 for r in rs if r.status == 200) != 1
        ]
        wrong_money: list[str] = []
        not_refunded: list[str] = []
        for user, pid in self.targets:
            balance = await self.api.balance(user)
            if balance != PRICE:
                wrong_money.append(f"{pid}: wallet {balance}, expected {PRICE}")
            purchase = await self.api.get(f"/api/purchases/{pid}", user.token)
            if not isinstance(purchase, dict) or purchase.get("status") != "refunded":
                not_refunded.append(pid)
        return [
            expect_outcomes(
                "one refund per purchase", [r for _, r in self.replies],
                {"200": groups, "409 INVALID_STATE": groups * (PER_PURCHASE - 1)},
            ),
            Invariant(
                "each purchase refunded by exactly one request", not not_once,
                f"{len(not_once)} purchases refunded by != 1 request: {not_once[:5]}"
                if not_once else f"{groups} purchases, {PER_PURCHASE} concurrent refunds each",
            ),
            Invariant(
                "money back exactly once", not wrong_money,
                "; ".join(wrong_money[:5]) or f"{groups} wallets back to {PRICE}",
            ),
            Invariant(
                "purchases end refunded", not not_refunded,
                f"not refunded: {not_refunded[:5]}" if not_refunded else f"{groups} refunded",
            ),
        ]
