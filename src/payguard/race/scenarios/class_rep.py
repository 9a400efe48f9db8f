"""class-rep: 15 users race for 10 class-rep seats, then cancels free seats exactly once."""

from __future__ import annotations

from collections import Counter
from functools import partial

from payguard.race.api import User
from payguard.race.client import Reply, new_key
from payguard.race.scenarios.base import (
    Scenario,
    expect_outcomes,
    gather,
    outcome_label_reply,
    register,
)
from payguard.race.types import Invariant

__all__ = ["ClassRep"]

PRICE = 50_000


@register
class ClassRep(Scenario):
    name = "class-rep"
    summary = "15 against a limit of 10, then cancels release seats once"
    routes = (
        ("POST", "/api/admin/programs"),
        ("POST", "/api/checkout/sessions"),
        ("POST", "/api/purchases/{id}/cancel"),
        ("GET", "/api/programs/{id}"),
    )
    default_requests = 15

    @classmethod
    def min_requests(cls) -> int:
        return 3

    def planned(self) -> int:
        return self.n + 2 * self.freed + 2 * self.freed

    async def setup(self) -> None:
        self.limit = max(2, self.n * 2 // 3)
        self.losers_n = self.n - self.limit
        self.freed = max(1, self.limit // 2)
        program = await self.api.program(PRICE, class_rep_limit=self.limit)
        self.program_id = str(program["id"])
        self.users = [await self.api.user() for _ in range(self.n)]
        # Fresh contenders for the freed seats, so the second race is again more than supply.
        extra = max(0, 2 * self.freed - self.losers_n)
        self.newcomers = [await self.api.user() for _ in range(extra)]

    async def _checkout(self, op: str, user: User) -> tuple[User, Reply]:
        return user, await self.request(
            op, "POST", "/api/checkout/sessions", token=user.token,
            json_body={"program_id": self.program_id, "class_rep": True}, key=new_key(),
        )

    async def _cancel(self, user: User, purchase_id: str) -> tuple[str, Reply]:
        return purchase_id, await self.request(
            "cancel", "POST", f"/api/purchases/{purchase_id}/cancel", token=user.token,
            key=new_key(),
        )

    async def fire(self) -> None:
        self.first = await gather(partial(self._checkout, "checkout", u) for u in self.users)
        winners = [(u, r) for u, r in self.first if r.status == 201 and isinstance(r.body, dict)]
        losers = [u for u, r in self.first if r.status != 201]
        canceled = winners[: self.freed]
        # Every cancel is sent twice at once: the seat must come back once, not twice.
        cancels = [(u, str(r.body["purchase_id"])) for u, r in canceled for _ in range(2)]
        self.cancels = await gather(partial(self._cancel, u, pid) for u, pid in cancels)
        contenders = (losers + self.newcomers)[: 2 * self.freed]
        self.second = await gather(partial(self._checkout, "re-checkout", u) for u in contenders)
        self.kept = len(winners) - len(canceled)

    async def verify(self) -> list[Invariant]:
        per: dict[str, list[Reply]] = {}
        for pid, reply in self.cancels:
            per.setdefault(pid, []).append(reply)
        shapes = Counter(
            " + ".join(sorted(outcome_label_reply(r) for r in rs)) for rs in per.values()
        )
        once = "200 + 409 INVALID_STATE"
        cancel_ok = set(shapes) == {once} and len(per) == self.freed
        seats_second = sum(1 for _, r in self.second if r.status == 201)
        program = await self.api.get(f"/api/programs/{self.program_id}", self.users[0].token)
        taken = program.get("class_rep_taken") if isinstance(program, dict) else None
        contenders = len(self.second)
        return [
            expect_outcomes(
                "first race: seats = limit", [r for _, r in self.first],
                {"201": self.limit, "409 CLASS_REP_LIMIT_REACHED": self.losers_n},
            ),
            Invariant(
                "each cancel applied once", cancel_ok,
                f"{len(per)} purchases canceled by 2 concurrent requests each: "
                + "; ".join(f"{n} x ({shape})" for shape, n in sorted(shapes.items())),
            ),
            expect_outcomes(
                "second race: only the freed seats", [r for _, r in self.second],
                {"201": self.freed, "409 CLASS_REP_LIMIT_REACHED": contenders - self.freed},
            ),
            Invariant(
                "seats held = limit", self.kept + seats_second == self.limit,
                f"{self.kept} kept + {seats_second} re-taken = {self.kept + seats_second}, "
                f"limit {self.limit}",
            ),
            Invariant(
                "program's seat count within 0..limit",
                isinstance(taken, int) and 0 <= taken <= self.limit,
                f"class_rep_taken {taken}, limit {self.limit}",
            ),
        ]
