"""Signed webhook delivery, the way Stripe does it: at least once, retried with backoff.

Each event gets ``duplicates`` delivery rows, written in the same transaction that
produced the event, so ``GET /deliveries`` shows what is owed even while the background
tasks run. With one copy per event, a session's events go out in order, one at a time;
with several, every copy of every event of the batch goes out concurrently in shuffled
order, which is what a receiver must survive.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import random
import time
from collections.abc import Coroutine
from dataclasses import dataclass, replace
from typing import Any

import httpx

from payguard.providers.simulator.store import EventRecord, SimStore, Txn

__all__ = ["Deliverer", "PlannedDelivery", "WebhookPolicy", "sign_payload"]


def sign_payload(payload: str | bytes, secret: str, timestamp: int | None = None) -> str:
    """A ``Stripe-Signature`` header value: ``t=<unix>,v1=<hex HMAC-SHA256>``."""
    t = int(time.time()) if timestamp is None else timestamp
    body = payload.decode("utf-8") if isinstance(payload, bytes) else payload
    mac = hmac.new(secret.encode("utf-8"), f"{t}.{body}".encode(), hashlib.sha256)
    return f"t={t},v1={mac.hexdigest()}"


@dataclass(frozen=True)
class WebhookPolicy:
    url: str
    secret: str
    duplicates: int = 1
    drop: bool = False
    attempts: int = 8
    backoff: float = 0.5  # first retry delay; doubles each time
    max_backoff: float = 30.0
    timeout: float = 10.0
    #: Sent as ``Authorization`` instead of a ``Stripe-Signature`` (PhonePe's callbacks).
    authorization: str | None = None
    #: Seconds every delivery is held back before its first attempt.
    delay: float = 0.0
    user_agent: str = "Stripe/1.0 (+https://stripe.com/docs/webhooks)"


@dataclass(frozen=True)
class PlannedDelivery:
    id: int
    event: EventRecord


class Deliverer:
    def __init__(self, store: SimStore, policy: WebhookPolicy) -> None:
        self.store = store
        self.policy = policy
        self._tasks: set[asyncio.Task[None]] = set()
        self._rng = random.Random()

    def with_policy(self, **changes: Any) -> Deliverer:
        """This deliverer with some policy fields changed for one operation (its tasks are
        still tracked, waited for and cancelled here)."""
        other = Deliverer(self.store, replace(self.policy, **changes))
        other._tasks = self._tasks
        return other

    def plan(self, txn: Txn) -> list[PlannedDelivery]:
        """Record the deliveries owed for the events of ``txn`` (inside that transaction)."""
        state = "dropped" if self.policy.drop else "pending"
        planned = []
        for event in txn.events:
            for _ in range(self.policy.duplicates):
                cur = txn.conn.execute(
                    "INSERT INTO deliveries (event_id, event_type, session_id, url, state, "
                    "updated) VALUES (?, ?, ?, ?, ?, ?)",
                    (event.id, event.type, event.session_id, self.policy.url, state, time.time()),
                )
                assert cur.lastrowid is not None
                planned.append(PlannedDelivery(cur.lastrowid, event))
        return [] if self.policy.drop else planned

    def start(self, planned: list[PlannedDelivery]) -> None:
        """Send in the background; the caller's response does not wait for the receiver."""
        if not planned:
            return
        if self.policy.duplicates == 1:
            self._spawn(self._in_order(planned))
        else:
            shuffled = list(planned)
            self._rng.shuffle(shuffled)
            for delivery in shuffled:
                self._spawn(self._in_order([delivery]))

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _in_order(self, planned: list[PlannedDelivery]) -> None:
        if self.policy.delay:
            await asyncio.sleep(self.policy.delay)
        async with httpx.AsyncClient(timeout=self.policy.timeout) as client:
            for delivery in planned:
                await self._deliver(client, delivery)

    async def _deliver(self, client: httpx.AsyncClient, delivery: PlannedDelivery) -> None:
        policy = self.policy
        for attempt in range(1, policy.attempts + 1):
            status: int | None = None
            error: str | None = None
            try:
                # Signed afresh per attempt, like Stripe: the timestamp is the send time.
                response = await client.post(policy.url, content=delivery.event.body,
                                             headers=self._headers(delivery.event.body))
                status = response.status_code
            except httpx.HTTPError as exc:
                error = f"{type(exc).__name__}: {exc}"
            ok = status is not None and 200 <= status < 300
            if not ok and error is None:
                error = f"HTTP {status}"
            final = ok or attempt == policy.attempts
            state = "delivered" if ok else ("failed" if final else "pending")
            await self._record(delivery.id, state, attempt, status, None if ok else error)
            if final:
                return
            await asyncio.sleep(min(policy.backoff * 2 ** (attempt - 1), policy.max_backoff))

    def _headers(self, body: str) -> dict[str, str]:
        headers = {"Content-Type": "application/json; charset=utf-8",
                   "User-Agent": self.policy.user_agent}
        if self.policy.authorization is not None:
            headers["Authorization"] = self.policy.authorization
        else:
            headers["Stripe-Signature"] = sign_payload(body, self.policy.secret)
        return headers

    async def _record(self, delivery_id: int, state: str, attempts: int, status: int | None,
                      error: str | None) -> None:
        def update(txn: Txn) -> None:
            txn.conn.execute(
                "UPDATE deliveries SET state = ?, attempts = ?, last_status = ?, "
                "last_error = ?, updated = ? WHERE id = ?",
                (state, attempts, status, error, time.time(), delivery_id),
            )
        await self.store.run(update)

    @property
    def pending(self) -> int:
        return len(self._tasks)

    async def wait_idle(self) -> None:
        """Wait until every delivery started by this process has finished (tests)."""
        while self._tasks:
            await asyncio.wait(set(self._tasks))

    async def aclose(self) -> None:
        tasks = set(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
