"""webhook-storm: every event delivered many times, out of order, concurrently; applied once.

With ``--provider phonepe`` the payments go through the PhonePe simulator's pay page with its
own callbacks dropped, and the harness delivers each ``PG_ORDER_COMPLETED`` callback itself,
``COPIES`` times, shuffled and concurrently, with PhonePe's ``Authorization`` header.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from functools import partial
from typing import Any

from payguard.race.api import User
from payguard.race.client import EndpointMissing, Reply, new_key
from payguard.race.numbers import check_unique
from payguard.race.scenarios.base import Scenario, gather, register
from payguard.race.types import Invariant
from payguard.race.webhooks import event, sign

__all__ = ["WebhookStorm"]

STRIPE_KEY = "sk_test_payguard_simulated"  # the simulator's default API key
COPIES = 5  # harness deliveries of each event
FULFIL_WAIT = 30.0  # seconds to wait for every purchase to complete
FULFILLING = ("checkout.session.completed", "checkout.session.async_payment_succeeded")


@register
class WebhookStorm(Scenario):
    name = "webhook-storm"
    summary = "every event delivered many times, out of order, concurrently: applied once"
    routes = (("POST", "/api/checkout/sessions"), ("POST", "/api/webhooks/stripe"),
              ("GET", "/api/purchases/{id}"))
    default_requests = 10

    @property
    def phonepe(self) -> bool:
        return self.ctx.provider == "phonepe"

    def _delivers(self) -> bool:
        """Whether the harness can sign (or authorize) deliveries of its own."""
        return bool(self.ctx.callback_auth if self.phonepe else self.ctx.webhook_secret)

    def planned(self) -> int:
        kinds = 1 if self.phonepe else len(FULFILLING)
        storm = kinds * COPIES if self._delivers() else 0
        return self.n * (1 + storm)

    async def setup(self) -> None:
        if not self.ctx.sim_url:
            raise EndpointMissing("POST", "/sim/checkout/{id}/pay", 0)
        self.sim = self.ctx.sim_url.rstrip("/")
        self.topups: list[tuple[User, int, dict[str, Any]]] = []
        for i in range(self.n):
            user = await self.api.user()
            amount = 1_000 + i
            reply = await self.client.request(
                "POST", "/api/checkout/sessions", token=user.token,
                json_body={"topup_amount": amount}, key=new_key(),
            )
            if reply.status != 201 or not isinstance(reply.body, dict):
                from payguard.race.api import SetupFailed

                raise SetupFailed(f"topup checkout: {reply.status} {reply.raw[:200]!r}")
            self.topups.append((user, amount, reply.body))

    async def _pay(self, session_id: str) -> Reply:
        if self.phonepe:
            # With our own deliveries, the simulator's are dropped: each callback then has
            # exactly COPIES deliveries, all from here.
            faults: dict[str, Any] = ({"drop": True} if self._delivers()
                                      else {"duplicates": COPIES})
            return await self.request("sim pay", "POST", f"{self.sim}/pay/{session_id}",
                                      json_body={"outcome": "success", **faults})
        return await self.request(
            "sim pay", "POST", f"{self.sim}/checkout/{session_id}/pay",
            json_body={"outcome": "succeeded"},
        )

    async def _session_object(self, checkout: dict[str, Any]) -> dict[str, Any]:
        sid = str(checkout["session_id"])
        try:
            reply = await self.client.request(
                "GET", f"{self.sim}/v1/checkout/sessions/{sid}",
                headers={"Authorization": f"Bearer {STRIPE_KEY}"},
            )
            if reply.status == 200 and isinstance(reply.body, dict):
                return dict(reply.body)
        except EndpointMissing:
            pass
        # The essentials of a paid Stripe checkout.session, if the simulator will not say.
        return {
            "id": sid, "object": "checkout.session", "status": "complete",
            "payment_status": "paid", "client_reference_id": checkout.get("purchase_id"),
            "metadata": {"purchase_id": checkout.get("purchase_id")},
            "amount_total": checkout.get("amount"), "currency": checkout.get("currency"),
        }

    async def _sim_says_paid(self, session_id: str) -> bool:
        """The Stripe simulator's own word that the session is paid (nothing assumed)."""
        try:
            reply = await self.client.request(
                "GET", f"{self.sim}/v1/checkout/sessions/{session_id}",
                headers={"Authorization": f"Bearer {STRIPE_KEY}"})
        except EndpointMissing:
            return False
        body = reply.body
        return (reply.status == 200 and isinstance(body, dict)
                and body.get("payment_status") == "paid")

    async def _deliver(self, event_id: str, body: bytes) -> tuple[str, Reply]:
        if self.phonepe:
            assert self.ctx.callback_auth is not None
            return event_id, await self.request(
                "callback", "POST", "/api/webhooks/phonepe", content=body,
                headers={"Content-Type": "application/json",
                         "Authorization": self.ctx.callback_auth})
        assert self.ctx.webhook_secret is not None
        return event_id, await self.request(
            "webhook", "POST", "/api/webhooks/stripe", content=body,
            headers={"Content-Type": "application/json",
                     "Stripe-Signature": sign(self.ctx.webhook_secret, body)},
        )

    async def fire(self) -> None:
        self.pays = await gather(partial(self._pay, str(c["session_id"]))
                                 for _, _, c in self.topups)
        self.deliveries: list[tuple[str, Reply]] = []
        if self.phonepe and self._delivers():
            orders = [r.body for r in self.pays if r.status == 200 and isinstance(r.body, dict)]
            events = [_phonepe_callback(o) for o in orders]
            work = [e for e in events for _ in range(COPIES)]
            self.ctx.rng.shuffle(work)
            self.deliveries = await gather(partial(self._deliver, eid, b) for eid, b in work)
        elif self.ctx.webhook_secret:
            sessions = await gather(partial(self._session_object, c) for _, _, c in self.topups)
            events = [event(kind, s) for s in sessions for kind in FULFILLING]
            work = [e for e in events for _ in range(COPIES)]
            self.ctx.rng.shuffle(work)
            self.deliveries = await gather(partial(self._deliver, eid, b) for eid, b in work)
        # A pay whose answer was lost (the instance serving the simulator was killed after
        # it applied) is refused when retried: the session is then already paid.
        self.paid_on_retry = 0
        for (_, _, checkout), reply in zip(self.topups, self.pays, strict=True):
            if reply.status != 200 and reply.attempts > 1 and not self.phonepe:
                self.paid_on_retry += await self._sim_says_paid(str(checkout["session_id"]))
        self.purchases = await self._wait_fulfilled()
        self.receipts = [str(p["receipt_number"]) for p in self.purchases.values()
                         if p.get("receipt_number")]

    async def _wait_fulfilled(self) -> dict[str, dict[str, Any]]:
        deadline = time.monotonic() + FULFIL_WAIT
        seen: dict[str, dict[str, Any]] = {}
        while True:
            for user, _, checkout in self.topups:
                pid = str(checkout["purchase_id"])
                if seen.get(pid, {}).get("status") != "completed":
                    seen[pid] = dict(await self.api.get(f"/api/purchases/{pid}", user.token))
            if all(p.get("status") == "completed" for p in seen.values()):
                return seen
            if time.monotonic() > deadline:
                return seen
            await asyncio.sleep(0.2)

    async def verify(self) -> list[Invariant]:
        statuses = Counter(str(p.get("status")) for p in self.purchases.values())
        wrong: list[str] = []
        for user, amount, _ in self.topups:
            balance = await self.api.balance(user)
            if balance != amount:
                wrong.append(f"{user.id}: topped up {amount}, balance {balance}")
        invariants = [
            Invariant("sim accepted every payment",
                      sum(r.status == 200 for r in self.pays) + self.paid_on_retry == self.n,
                      ", ".join(f"{k}: {v}" for k, v in
                                sorted(Counter(str(r.status) for r in self.pays).items()))
                      + (f" ({self.paid_on_retry} refused on a retry: already paid by the "
                         "attempt whose answer was lost)" if self.paid_on_retry else "")),
            Invariant("every payment fulfilled", statuses == Counter({"completed": self.n}),
                      f"purchase statuses: {dict(statuses)}"
                      + ("" if self.deliveries else
                         " (simulator deliveries only: no webhook secret or callback "
                         "credentials to deliver with)")),
            Invariant("each topup credited exactly once", not wrong,
                      "; ".join(wrong[:5]) or f"{self.n} wallets hold exactly their topup"),
            Invariant("one receipt per payment", len(self.receipts) == self.n,
                      f"{len(self.receipts)} receipts for {self.n} payments"),
            check_unique(self.receipts),
        ]
        if self.deliveries:
            rejected = Counter(str(r.status) for _, r in self.deliveries if r.status != 200)
            firsts: Counter[str] = Counter()
            retried: set[str] = set()
            for eid, reply in self.deliveries:
                if reply.status == 200 and isinstance(reply.body, dict):
                    firsts[eid] += reply.body.get("duplicate") is False
                if reply.attempts > 1:
                    retried.add(eid)
            events = {eid for eid, _ in self.deliveries}
            # Never twice; and once, unless the delivery that applied it lost its answer
            # (a retried delivery then rightly hears "duplicate").
            not_once = [e for e in events
                        if firsts[e] > 1 or (firsts[e] == 0 and e not in retried)]
            invariants += [
                Invariant("every delivery acknowledged 200", not rejected,
                          f"rejected: {dict(rejected)}" if rejected
                          else f"{len(self.deliveries)} signed deliveries"),
                Invariant("each event id applied once", not not_once,
                          f"{len(not_once)} of {len(events)} events not marked new exactly once"
                          if not_once else
                          f"{len(events)} events x {COPIES} deliveries: "
                          "one 'duplicate: false' each"),
            ]
        return invariants


def _phonepe_callback(order: dict[str, Any]) -> tuple[str, bytes]:
    """A ``PG_ORDER_COMPLETED`` callback for a paid order (as the simulator answered it),
    with the id payguard's inbox keys it by."""
    keys = ("merchantId", "merchantOrderId", "orderId", "state", "amount", "expireAt",
            "metaInfo", "paymentDetails")
    payload = {k: order[k] for k in keys if order.get(k) is not None}
    body = json.dumps({"event": "checkout.order.completed", "type": "PG_ORDER_COMPLETED",
                       "payload": payload}).encode()
    return f"PG_ORDER_COMPLETED:{order.get('orderId')}", body
