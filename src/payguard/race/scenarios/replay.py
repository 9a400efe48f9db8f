"""replay: retries of completed requests get the stored answer, byte for byte, and no effect."""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import partial
from typing import Any

from payguard.race.client import Reply, new_key
from payguard.race.scenarios.base import Scenario, gather, register
from payguard.race.types import Invariant

__all__ = ["Replay"]

PRICE = 400


@dataclass
class _Call:
    label: str
    path: str
    body: dict[str, Any]
    token: str | None
    key: str
    original: Reply | None = None


@register
class Replay(Scenario):
    name = "replay"
    summary = "retries of completed requests: byte-identical answers, applied once"
    routes = (
        ("POST", "/api/purchases"),
        ("POST", "/api/admin/wallets/{user_id}/adjustments"),
        ("POST", "/api/admin/purchases/{id}/refund"),
        ("GET", "/api/wallet"),
    )
    default_requests = 25

    def planned(self) -> int:
        return 5 + 5 * self.copies + 1

    async def setup(self) -> None:
        self.copies = max(2, self.n // 5)
        self.rich = await self.api.user(PRICE * 2)
        self.poor = await self.api.user(PRICE // 2)
        product = await self.api.product(PRICE, items=3)
        pid = str(product["id"])
        buy = {"product_id": pid, "quantity": 1}
        self.calls = [
            _Call("purchase", "/api/purchases", buy, self.rich.token, new_key()),
            _Call("purchase", "/api/purchases", buy, self.rich.token, new_key()),
            _Call("declined purchase", "/api/purchases", buy, self.poor.token, new_key()),
            _Call("adjustment", f"/api/admin/wallets/{self.rich.id}/adjustments",
                  {"amount": 500, "reason": "race replay"}, None, new_key()),
        ]

    async def _send(self, op: str, call: _Call, body: dict[str, Any] | None = None) -> Reply:
        return await self.request(
            op, "POST", call.path, token=call.token, key=call.key,
            content=json.dumps(body or call.body).encode(),
            headers={"Content-Type": "application/json"},
        )

    async def fire(self) -> None:
        originals = await gather(partial(self._send, "original", c) for c in self.calls)
        for call, reply in zip(self.calls, originals, strict=True):
            call.original = reply
        first = originals[0]
        if first.status == 201 and isinstance(first.body, dict):
            refund = _Call("refund", f"/api/admin/purchases/{first.body['id']}/refund",
                           {"reason": "race replay"}, None, new_key())
            refund.original = await self._send("original", refund)
            self.calls.append(refund)
        self.receipts = [
            str(c.original.body["receipt_number"]) for c in self.calls
            if c.original is not None and c.original.status == 201
            and isinstance(c.original.body, dict) and c.original.body.get("receipt_number")
        ]
        self.balance_before = await self.api.balance(self.rich)
        work = [c for c in self.calls for _ in range(self.copies)]
        self.ctx.rng.shuffle(work)
        replays = await gather(partial(self._send, "replay", c) for c in work)
        self.replays = list(zip(work, replays, strict=True))
        # Same key, different body: must be refused, never applied or answered from cache.
        self.reuse = await self._send("reused key", self.calls[0], {**self.calls[0].body,
                                                                    "quantity": 2})

    async def verify(self) -> list[Invariant]:
        expected = {"purchase": 201, "declined purchase": 400, "adjustment": 201, "refund": 200}
        bad_originals = [
            f"{c.label}: {c.original.status if c.original else None}" for c in self.calls
            if c.original is None or c.original.status != expected[c.label]
        ]
        mismatched: list[str] = []
        unflagged = 0
        for call, reply in self.replays:
            assert call.original is not None
            if reply.status != call.original.status or reply.raw != call.original.raw:
                mismatched.append(
                    f"{call.label}: original {call.original.status} {call.original.raw[:60]!r}"
                    f" vs replay {reply.status} {reply.raw[:60]!r}"
                )
            elif not reply.replayed:
                unflagged += 1
        balance_after = await self.api.balance(self.rich)
        return [
            Invariant(
                "originals answered as the contract says", not bad_originals,
                "; ".join(bad_originals)
                or f"{len(self.calls)} originals (201 x3 incl. adjustment, 400, 200 refund)",
            ),
            Invariant(
                "replays byte-identical", not mismatched,
                "; ".join(mismatched[:3])
                or f"{len(self.replays)} replays of {len(self.calls)} requests identical",
            ),
            Invariant(
                "replays flagged Idempotent-Replayed", unflagged == 0,
                f"{unflagged} identical replays lack 'Idempotent-Replayed: true'",
            ),
            Invariant(
                "replays change nothing", balance_after == self.balance_before,
                f"balance {self.balance_before} before the replays, {balance_after} after",
            ),
            Invariant(
                "reused key with another body refused",
                self.reuse.status == 422 and self.reuse.code == "IDEMPOTENCY_KEY_REUSED",
                f"answered {self.reuse.status} {self.reuse.code}",
            ),
        ]
