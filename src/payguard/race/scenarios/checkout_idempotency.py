"""checkout-idempotency: 3 concurrent checkouts with one key make one session."""

from __future__ import annotations

from functools import partial

from payguard.race.api import User
from payguard.race.client import Reply, new_key
from payguard.race.scenarios.base import Scenario, gather, register
from payguard.race.scenarios.checkout import pending_purchases, session_of
from payguard.race.types import Invariant

__all__ = ["CheckoutIdempotency"]

SAME_KEY = 3


@register
class CheckoutIdempotency(Scenario):
    name = "checkout-idempotency"
    summary = "3 concurrent checkouts with one key: one session"
    routes = (("POST", "/api/admin/programs"), ("POST", "/api/checkout/sessions"),
              ("GET", "/api/purchases"))
    default_requests = 15

    @classmethod
    def min_requests(cls) -> int:
        return SAME_KEY

    async def setup(self) -> None:
        self.groups = max(1, self.n // SAME_KEY)
        self.n = self.groups * SAME_KEY
        program = await self.api.program(20_000, class_rep_limit=0)
        self.program_id = str(program["id"])
        self.users = [await self.api.user() for _ in range(self.groups)]

    async def _checkout(self, user: User, key: str) -> tuple[User, Reply]:
        return user, await self.request(
            "checkout", "POST", "/api/checkout/sessions", token=user.token,
            json_body={"program_id": self.program_id}, key=key,
        )

    async def fire(self) -> None:
        calls = [(u, k) for u in self.users for k in [new_key()] for _ in range(SAME_KEY)]
        self.ctx.rng.shuffle(calls)
        self.replies = await gather(partial(self._checkout, u, k) for u, k in calls)

    async def verify(self) -> list[Invariant]:
        by_user: dict[str, list[Reply]] = {}
        for user, reply in self.replies:
            by_user.setdefault(user.id, []).append(reply)
        not_one: list[str] = []
        not_identical: list[str] = []
        for uid, replies in by_user.items():
            sessions = {session_of(r.body) for r in replies}
            if len(sessions) != 1 or None in sessions or any(r.status != 201 for r in replies):
                not_one.append(f"{uid}: {[(r.status, session_of(r.body)) for r in replies]}")
            if len({r.raw for r in replies}) != 1:
                not_identical.append(uid)
        extra: list[str] = []
        for user in self.users:
            pending = await pending_purchases(self.api, user)
            if len(pending) != 1:
                extra.append(f"{user.id}: {len(pending)} pending purchases")
        return [
            Invariant(
                "one session per key", not not_one,
                "; ".join(not_one[:3])
                or f"{self.groups} keys x {SAME_KEY} concurrent requests: 201, one session each",
            ),
            Invariant(
                "same answer for the same key", not not_identical,
                f"bodies differ for {not_identical[:3]}" if not_identical else "byte-identical",
            ),
            Invariant(
                "one pending purchase per user", not extra,
                "; ".join(extra[:3]) or f"{self.groups} users with exactly 1 pending purchase",
            ),
        ]
