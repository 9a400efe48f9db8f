"""A checkout-lock holder frozen (SIGSTOP) past its lease: another instance takes over and
records the session; the frozen one, resumed (SIGCONT), can record nothing; one session.

Two ``payguard serve`` processes on PostgreSQL with Redis locks and one simulator. A test
hook holds every checkout for HOLD seconds, with its lock, between reserving the purchase
and calling the provider: instance 0 is frozen inside that window.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import time
import uuid
from typing import Any

import httpx
from sqlalchemy import select

from payguard.config import to_async_url
from payguard.race.spawner import Cluster
from payguard.store.engine import create_engine
from payguard.store.schema import fences, purchases
from payguard.store.uow import Database

HOLD = 3.0
TRANSIENT = {"PAYMENT_IN_PROGRESS", "REQUEST_IN_PROGRESS"}


async def _post(client: httpx.AsyncClient, url: str, token: str, body: dict[str, Any],
                key: str) -> httpx.Response:
    return await client.post(url, json=body, headers={
        "Authorization": f"Bearer {token}", "Idempotency-Key": key}, timeout=120)


async def _until_final(client: httpx.AsyncClient, url: str, token: str,
                       body: dict[str, Any], key: str) -> httpx.Response:
    """A well-behaved client: the same key again while the answer says "retry"."""
    deadline = time.monotonic() + 60
    while True:
        reply = await _post(client, url, token, body, key)
        code = reply.json().get("code") if reply.status_code >= 400 else None
        if (reply.status_code < 500 and code not in TRANSIENT) or time.monotonic() > deadline:
            return reply
        await asyncio.sleep(0.5)


async def test_a_frozen_holder_cannot_record_after_another_took_over(
        pg_url: str, redis_url: str) -> None:
    env = {"PAYGUARD_TEST_CHECKOUT_HOLD_SECONDS": str(HOLD), "PAYGUARD_LOCK_BACKEND": "redis",
           "PAYGUARD_RECONCILE_INTERVAL": "0"}
    async with Cluster(instances=2, database_url=pg_url, redis_url=redis_url,
                       extra_env=env) as cluster, httpx.AsyncClient() as client:
        a, b = cluster.urls
        admin = {"Authorization": f"Bearer {cluster.admin_token}"}
        user = (await client.post(f"{a}/api/admin/users", headers=admin, json={
            "email": f"frozen-{uuid.uuid4().hex[:8]}@example.test"})).json()
        body = {"topup_amount": 2500}

        # Instance 0 takes the lock, reserves the purchase, then holds (the hook)...
        first = asyncio.create_task(
            _post(client, f"{a}/api/checkout/sessions", user["token"], body, "k-frozen"))
        deadline = time.monotonic() + 30
        pending: list[Any] = []
        while not pending and time.monotonic() < deadline:
            reply = await client.get(f"{b}/api/purchases?status=pending",
                                     headers={"Authorization": f"Bearer {user['token']}"})
            pending = reply.json()
            if not pending:
                await asyncio.sleep(0.05)
        assert len(pending) == 1, pending
        # ... and is frozen there, holding the checkout lock, past its 4 s lease.
        os.kill(cluster.pid(0), signal.SIGSTOP)
        try:
            # A second click on instance 1 waits for the lock, gets it once the lease lapsed,
            # finds the pending purchase and records its session.
            second = await _until_final(client, f"{b}/api/checkout/sessions", user["token"],
                                        body, "k-other")
        finally:
            os.kill(cluster.pid(0), signal.SIGCONT)
        assert second.status_code == 200, second.text
        taken_over = second.json()
        assert taken_over["existing"] is True
        assert taken_over["purchase_id"] == pending[0]["id"]
        session_id = taken_over["session_id"]
        assert session_id

        # The frozen request wakes up holding a stale fencing token: refused, retryable.
        stale = await first
        assert stale.status_code == 409, stale.text
        assert stale.json()["code"] == "PAYMENT_IN_PROGRESS"
        assert "lapsed" in stale.json()["detail"]
        # Its retry (same key) resumes from its recovery point (it reserved the purchase,
        # so it is the request that created it: 201) and answers with the one session.
        retried = await _until_final(client, f"{a}/api/checkout/sessions", user["token"],
                                     body, "k-frozen")
        assert retried.status_code == 201, retried.text
        assert retried.json()["session_id"] == session_id

        # One session at the provider for the purchase: both holders used its derived key.
        with sqlite3.connect(cluster._tmp / "sim" / "simulator.db") as conn:
            metas = [json.loads(d).get("metadata", {}) for (d,) in
                     conn.execute("SELECT data FROM sessions")]
        assert sum(m.get("purchase_id") == pending[0]["id"] for m in metas) == 1, metas

    db = Database(create_engine(to_async_url(pg_url)))
    try:
        async with db.read() as uow:
            rows = (await uow.conn.execute(
                select(purchases).where(purchases.c.user_id == user["id"]))).all()
            fence_rows = (await uow.conn.execute(select(fences))).all()
    finally:
        await db.dispose()
    assert [(r.status, r.provider_session_id) for r in rows] == [("pending", session_id)]
    # Instance 1's token is the newest the checkout accepted; instance 0's was older.
    assert len(fence_rows) == 1 and fence_rows[0].resource.startswith("checkout:")
    assert fence_rows[0].last_token > 1 << 32  # an epoch-carrying Redis token

