"""double-click: one user, several keys at once for the same item: one session."""

from __future__ import annotations

from collections import Counter
from functools import partial

from payguard.race.api import User
from payguard.race.client import Reply, new_key
from payguard.race.scenarios.base import Scenario, gather, register
from payguard.race.scenarios.checkout import pending_purchases, session_of
from payguard.race.types import Invariant

__all__ = ["DoubleClick"]

CLICKS = 5


@register
class DoubleClick(Scenario):
    name = "double-click"
    summary = "one user, different keys, same item: one session"
    routes = (("POST", "/api/admin/programs"), ("POST", "/api/checkout/sessions"),
              ("GET", "/api/purchases"))
    default_requests = 25

    @classmethod
    def min_requests(cls) -> int:
        return CLICKS

    async def setup(self) -> None:
        self.groups = max(1, self.n // CLICKS)
        self.n = self.groups * CLICKS
        program = await self.api.program(30_000, class_rep_limit=0)
        self.program_id = str(program["id"])
        self.users = [await self.api.user() for _ in range(self.groups)]

    async def _click(self, user: User) -> tuple[User, Reply]:
        return user, await self.request(
            "checkout", "POST", "/api/checkout/sessions", token=user.token,
            json_body={"program_id": self.program_id}, key=new_key(),
        )

    async def fire(self) -> None:
        clicks = [u for u in self.users for _ in range(CLICKS)]
        self.ctx.rng.shuffle(clicks)
        self.replies = await gather(partial(self._click, u) for u in clicks)

    async def verify(self) -> list[Invariant]:
        by_user: dict[str, list[Reply]] = {}
        for user, reply in self.replies:
            by_user.setdefault(user.id, []).append(reply)
        split: list[str] = []
        unanswered: list[str] = []
        created: list[str] = []
        for uid, replies in by_user.items():
            sessions = {session_of(r.body) for r in replies if r.status in (200, 201)}
            if len(sessions) > 1:
                split.append(f"{uid}: {len(sessions)} sessions")
            if any(r.status not in (200, 201) for r in replies):
                unanswered.append(f"{uid}: {Counter(r.status for r in replies)}")
            news = sum(1 for r in replies if r.status == 201)
            if news != 1:
                created.append(f"{uid}: {news} new sessions")
        extra: list[str] = []
        for user in self.users:
            pending = await pending_purchases(self.api, user)
            if len(pending) != 1:
                extra.append(f"{user.id}: {len(pending)} pending purchases")
        return [
            Invariant("one session per user", not split and not created,
                      "; ".join((split + created)[:3])
                      or f"{self.groups} users x {CLICKS} clicks: 1 x 201, rest 200 existing"),
            Invariant("every click answered with it", not unanswered,
                      "; ".join(unanswered[:3]) or "all clicks 200/201"),
            Invariant("one pending purchase per user", not extra,
                      "; ".join(extra[:3]) or f"{self.groups} users with 1 pending purchase"),
        ]
