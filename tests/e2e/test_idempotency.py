"""Idempotency keys through real HTTP (issue 3's must-shows), on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import httpx
from sqlalchemy import func, select

from payguard.config import to_async_url
from payguard.store.engine import create_engine
from payguard.store.schema import idempotency_keys, purchases
from payguard.store.uow import Database
from tests.support.api import ApiClient
from tests.support.server import LiveServer

PRICE = 500


async def test_20_concurrent_identical_purchases_with_one_key(api: ApiClient) -> None:
    user = await api.create_user(balance=10 * PRICE)
    product = await api.create_product(PRICE, 10)
    key = str(uuid.uuid4())
    responses = await asyncio.gather(
        *(api.purchase(user["token"], product["id"], key=key) for _ in range(20))
    )
    created = [r for r in responses if r.status_code == 201]
    in_progress = [r for r in responses if r.status_code == 409]
    assert len(created) + len(in_progress) == 20
    assert created, "at least one request must have run"
    assert len({r.content for r in created}) == 1
    for r in in_progress:
        assert r.json()["code"] == "REQUEST_IN_PROGRESS"
        assert int(r.headers["retry-after"]) >= 1
    assert await api.balance(user["token"]) == 9 * PRICE
    listed = await api.http.get("/api/purchases", headers=api.auth(user["token"]))
    assert len(listed.json()) == 1

    replay = await api.purchase(user["token"], product["id"], key=key)
    assert replay.status_code == 201
    assert replay.headers["idempotent-replayed"] == "true"
    assert replay.content == created[0].content
    assert await api.balance(user["token"]) == 9 * PRICE


async def test_key_reused_with_other_body_or_path_and_scoped_per_user(api: ApiClient) -> None:
    alice = await api.create_user(balance=10 * PRICE)
    bob = await api.create_user(balance=10 * PRICE)
    product = await api.create_product(PRICE, 10)
    key = "shared-key-1"
    first = await api.purchase(alice["token"], product["id"], key=key)
    assert first.status_code == 201
    other_body = await api.purchase(alice["token"], product["id"], 2, key=key)
    assert (other_body.status_code, other_body.json()["code"]) == (422, "IDEMPOTENCY_KEY_REUSED")
    other_path = await api.http.post(
        f"/api/purchases/{first.json()['id']}/cancel", json={},
        headers=api.auth(alice["token"], key))
    assert other_path.status_code in (404, 405, 422)
    if other_path.status_code == 422:
        assert other_path.json()["code"] == "IDEMPOTENCY_KEY_REUSED"
    # Same key, another user: independent.
    bobs = await api.purchase(bob["token"], product["id"], key=key)
    assert bobs.status_code == 201 and "idempotent-replayed" not in bobs.headers
    assert bobs.json()["id"] != first.json()["id"]
    assert await api.balance(alice["token"]) == 9 * PRICE
    assert await api.balance(bob["token"]) == 9 * PRICE


async def test_insufficient_balance_is_replayed_after_top_up(api: ApiClient) -> None:
    user = await api.create_user(balance=PRICE - 1)
    product = await api.create_product(PRICE, 5)
    key = str(uuid.uuid4())
    first = await api.purchase(user["token"], product["id"], key=key)
    assert (first.status_code, first.json()["code"]) == (400, "INSUFFICIENT_BALANCE")
    assert first.headers["content-type"] == "application/problem+json"
    await api.admin_post(f"/api/admin/wallets/{user['id']}/adjustments",
                         {"amount": 10 * PRICE, "reason": "top up"}, key=str(uuid.uuid4()))
    again = await api.purchase(user["token"], product["id"], key=key)
    assert again.status_code == 400
    assert again.content == first.content
    assert again.headers["idempotent-replayed"] == "true"
    assert again.headers["content-type"] == "application/problem+json"
    fresh = await api.purchase(user["token"], product["id"])
    assert fresh.status_code == 201


async def test_key_validation_happens_before_anything_runs(api: ApiClient) -> None:
    user = await api.create_user(balance=10 * PRICE)
    product = await api.create_product(PRICE, 5)
    body = {"product_id": product["id"]}
    missing = await api.http.post("/api/purchases", json=body, headers=api.auth(user["token"]))
    assert (missing.status_code, missing.json()["code"]) == (400, "IDEMPOTENCY_KEY_MISSING")
    for bad in ("", "x" * 256, "caf\u00e9"):
        headers = api.auth(user["token"])
        headers["Idempotency-Key"] = bad
        r = await api.http.post("/api/purchases", json=body,
                                headers={k: v.encode() for k, v in headers.items()})
        assert (r.status_code, r.json()["code"]) == (400, "IDEMPOTENCY_KEY_INVALID"), bad
    # 422 validation with a key: not stored, so the key can then be used with a valid body.
    key = str(uuid.uuid4())
    invalid = await api.http.post("/api/purchases", json={"product_id": product["id"],
                                                          "quantity": 0},
                                  headers=api.auth(user["token"], key))
    assert invalid.status_code == 422
    ok = await api.purchase(user["token"], product["id"], key=key)
    assert ok.status_code == 201
    assert await api.balance(user["token"]) == 9 * PRICE


async def test_sigkill_with_requests_in_flight_then_retry_applies_each_once(
    db_url: str, tmp_path: Path,
) -> None:
    env = {"PAYGUARD_TEST_HOLD_SECONDS": "5", "PAYGUARD_IDEMPOTENCY_LOCK_TIMEOUT": "2"}
    server = LiveServer(tmp_path / "data", db_url, env=env).start()
    keys = [str(uuid.uuid4()) for _ in range(12)]
    try:
        async with ApiClient(server.url, server.admin_token) as api:
            user = await api.create_user(balance=100 * PRICE)
            product = await api.create_product(PRICE, 50)
            inflight = [asyncio.create_task(api.purchase(user["token"], product["id"], key=k))
                        for k in keys]
            await asyncio.sleep(1.5)  # every request has claimed its key and is held
            server.kill()
            results = await asyncio.gather(*inflight, return_exceptions=True)
            assert all(isinstance(r, httpx.HTTPError) for r in results), results
    finally:
        server.stop()

    server.extra_env.pop("PAYGUARD_TEST_HOLD_SECONDS")
    server.start()
    try:
        async with ApiClient(server.url, server.admin_token) as api:
            outcomes: dict[str, httpx.Response] = {}
            deadline = asyncio.get_running_loop().time() + 30
            while len(outcomes) < len(keys):
                assert asyncio.get_running_loop().time() < deadline, "keys never released"
                for k in keys:
                    if k in outcomes:
                        continue
                    r = await api.purchase(user["token"], product["id"], key=k)
                    if r.status_code == 409:
                        assert r.json()["code"] == "REQUEST_IN_PROGRESS"
                        continue
                    outcomes[k] = r
                await asyncio.sleep(0.5)
            assert {r.status_code for r in outcomes.values()} == {201}
            # A second round is all replays: still one purchase per key.
            for k in keys:
                again = await api.purchase(user["token"], product["id"], key=k)
                assert again.headers.get("idempotent-replayed") == "true"
                assert again.content == outcomes[k].content
            assert await api.balance(user["token"]) == (100 - len(keys)) * PRICE
            listed = await api.http.get("/api/purchases", headers=api.auth(user["token"]))
            assert len(listed.json()) == len(keys)
            audit = await api.audit()
            assert audit["ok"], audit["problems"]
    finally:
        server.stop()


async def test_ttl_expiry_makes_a_key_new_and_the_reaper_removes_it(
    db_url: str, tmp_path: Path,
) -> None:
    server = LiveServer(tmp_path / "data", db_url,
                        env={"PAYGUARD_IDEMPOTENCY_TTL": "2"}).start()
    db = Database(create_engine(to_async_url(db_url)))
    try:
        async with ApiClient(server.url, server.admin_token) as api:
            user = await api.create_user(balance=10 * PRICE)
            product = await api.create_product(PRICE, 5)
            first = await api.purchase(user["token"], product["id"], key="ttl-key")
            assert first.status_code == 201
            replay = await api.purchase(user["token"], product["id"], key="ttl-key")
            assert replay.headers.get("idempotent-replayed") == "true"
            await asyncio.sleep(2.5)
            second = await api.purchase(user["token"], product["id"], key="ttl-key")
            assert second.status_code == 201 and "idempotent-replayed" not in second.headers
            assert second.json()["id"] != first.json()["id"]
            # The reaper (every ttl/10, at least 1 s) deletes the key once it expires again.
            for _ in range(60):
                async with db.read() as uow:
                    left = await uow.conn.scalar(select(func.count()).select_from(
                        idempotency_keys).where(idempotency_keys.c.key == "ttl-key"))
                if left == 0:
                    break
                await asyncio.sleep(0.25)
            assert left == 0
            async with db.read() as uow:
                assert await uow.conn.scalar(select(func.count()).select_from(purchases)) == 2
    finally:
        await db.dispose()
        server.stop()
