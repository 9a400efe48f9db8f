"""Group commit through real HTTP (issue 10's must-shows).

- a batch with mixed outcomes (short of funds, out of stock, unknown product, a repeated
  key, an adjustment) answers each request as a lone request would, and the audit is clean
  (the byte-for-byte comparison with lone commands is in
  tests/integration/primitives/test_batch.py);
- kill -9 of a server during a purchase storm, restart, retry every key: one purchase per
  key, receipts gapless, audit clean (SQLite and PostgreSQL);
- three instances on one PostgreSQL: receipts gapless across them, no deadlock or other
  5xx surfaced to clients.
"""

from __future__ import annotations

import asyncio
import random
import re
import uuid
from collections import Counter
from pathlib import Path

import httpx

from tests.support.api import ApiClient, outcome_counts
from tests.support.server import LiveServer

PRICE = 300


def _batch_metrics(text: str) -> tuple[float, float]:
    """(commands, batches) from the payguard_batch_size histogram."""
    total = re.search(r"^payguard_batch_size_sum (\S+)$", text, re.M)
    count = re.search(r"^payguard_batch_size_count (\S+)$", text, re.M)
    assert total and count, text[-2000:]
    return float(total.group(1)), float(count.group(1))


async def test_a_mixed_batch_answers_each_request_as_alone(db_url: str, tmp_path: Path) -> None:
    # A 300 ms linger makes the concurrent requests below one batch.
    server = LiveServer(tmp_path / "data", db_url,
                        env={"PAYGUARD_BATCH_LINGER_MS": "300"}).start()
    try:
        async with ApiClient(server.url, server.admin_token) as api:
            rich = await api.create_user(balance=10 * PRICE)
            poor = await api.create_user(balance=PRICE - 1)
            product = await api.create_product(PRICE, 3)
            plenty = await api.create_product(PRICE, 10)  # poor's buy fails on funds only
            before = _batch_metrics((await api.http.get("/metrics")).text)
            repeated = str(uuid.uuid4())
            calls = [
                api.purchase(rich["token"], product["id"], 2),
                api.purchase(poor["token"], plenty["id"]),
                api.purchase(rich["token"], product["id"], 2),
                api.purchase(rich["token"], "prd_nope"),
                api.purchase(rich["token"], product["id"], key=repeated),
                api.purchase(rich["token"], product["id"], key=repeated),
                api.http.post(f"/api/admin/wallets/{poor['id']}/adjustments",
                              json={"amount": -PRICE, "reason": "too much"},
                              headers=api.auth(api.admin_token, str(uuid.uuid4()))),
            ]
            r = await asyncio.gather(*calls)
            after = _batch_metrics((await api.http.get("/metrics")).text)

            # Two buyers of 2 of the 3 items and the repeated key's 1: whatever the order,
            # the first of the two got 2 items, the key 1, the other pair nothing.
            won, lost = sorted([r[0], r[2]], key=lambda x: x.status_code)
            assert (won.status_code, len(won.json()["items"])) == (201, 2)
            assert (lost.status_code, lost.json()["code"]) == (409, "OUT_OF_STOCK")
            assert lost.json()["detail"].startswith("fewer than 2 items of ")
            assert (r[1].status_code, r[1].json()["code"]) == (400, "INSUFFICIENT_BALANCE")
            assert r[1].json()["detail"] == (
                f"account wal_{poor['id']}_USD cannot be debited by {PRICE} minor units")
            assert (r[3].status_code, r[3].json()["code"]) == (404, "NOT_FOUND")
            # The repeated key: one ran, the other was told it is in progress.
            pair = sorted([r[4], r[5]], key=lambda x: x.status_code)
            assert pair[0].status_code == 201
            assert (pair[1].status_code, pair[1].json()["code"]) == (409, "REQUEST_IN_PROGRESS")
            assert int(pair[1].headers["retry-after"]) >= 1
            assert (r[6].status_code, r[6].json()["code"]) == (400, "INSUFFICIENT_BALANCE")
            # The six commands (the in-progress repeat never queued) came in one or two
            # batches.
            commands, batches = after[0] - before[0], after[1] - before[1]
            assert commands == 6 and batches <= 2, (commands, batches)

            replay = await api.purchase(rich["token"], product["id"], key=repeated)
            assert replay.headers["idempotent-replayed"] == "true"
            assert replay.content == pair[0].content
            receipts = sorted(int(x.json()["receipt_number"][-6:]) for x in (won, pair[0]))
            assert receipts == [receipts[0], receipts[0] + 1]
            assert await api.balance(rich["token"]) == 7 * PRICE
            assert await api.balance(poor["token"]) == PRICE - 1
            audit = await api.audit()
            assert audit["ok"], audit["problems"]
    finally:
        server.stop()


async def test_kill_9_during_a_purchase_storm_then_retries(db_url: str, tmp_path: Path) -> None:
    server = LiveServer(tmp_path / "data", db_url).start()
    keys = [str(uuid.uuid4()) for _ in range(120)]
    try:
        async with ApiClient(server.url, server.admin_token) as api:
            buyers = await asyncio.gather(*(api.create_user(balance=10 * PRICE)
                                            for _ in range(12)))
            product = await api.create_product(PRICE, len(keys))
            owner = {k: buyers[i % len(buyers)] for i, k in enumerate(keys)}

            async def storm(k: str) -> httpx.Response | BaseException:
                await asyncio.sleep(random.uniform(0, 1.0))
                try:
                    return await api.purchase(owner[k]["token"], product["id"], key=k)
                except httpx.HTTPError as exc:
                    return exc

            tasks = [asyncio.create_task(storm(k)) for k in keys]
            await asyncio.sleep(random.uniform(0.4, 0.7))
            server.kill()
            first = await asyncio.gather(*tasks)
    finally:
        server.stop()
    answered = sum(isinstance(r, httpx.Response) for r in first)
    assert answered < len(keys), "the kill came after the storm: nothing was in flight"

    server.start()
    try:
        async with ApiClient(server.url, server.admin_token) as api:
            results = await asyncio.gather(*(
                api.purchase(owner[k]["token"], product["id"], key=k) for k in keys))
            assert outcome_counts(list(results)) == {(201, None): len(keys)}
            for k, before, after in zip(keys, first, results, strict=True):
                if isinstance(before, httpx.Response):  # answered before the kill: replayed
                    assert after.headers.get("idempotent-replayed") == "true"
                    assert after.content == before.content, k
            assert len({r.json()["id"] for r in results}) == len(keys)
            seqs = sorted(int(r.json()["receipt_number"][-6:]) for r in results)
            assert seqs == list(range(1, len(keys) + 1))
            for b in buyers:
                assert await api.balance(b["token"]) == 0
            audit = await api.audit()
            assert audit["ok"], audit["problems"]
    finally:
        server.stop()


async def test_three_instances_on_postgresql_stay_gapless(pg_url: str, redis_url: str,
                                                           tmp_path: Path) -> None:
    env = {"PAYGUARD_REDIS_URL": redis_url, "PAYGUARD_LOCK_BACKEND": "redis"}
    first = LiveServer(tmp_path / "n0", pg_url, env=env)
    servers = [first] + [LiveServer(tmp_path / f"n{i}", pg_url, env=env) for i in (1, 2)]
    for s in servers:
        s.admin_token = first.admin_token
    await asyncio.gather(*(asyncio.to_thread(s.start) for s in servers))
    clients = [ApiClient(s.url, s.admin_token) for s in servers]
    try:
        api0 = clients[0]
        hot = await api0.create_user(balance=40 * PRICE)
        spread = await asyncio.gather(*(api0.create_user(balance=2 * PRICE)
                                        for _ in range(20)))
        product = await api0.create_product(PRICE, 100)
        calls = [clients[i % 3].purchase(hot["token"], product["id"]) for i in range(60)]
        calls += [clients[i % 3].purchase(spread[i % 20]["token"], product["id"])
                  for i in range(60)]
        responses = await asyncio.gather(*calls)
        codes = Counter((r.status_code, r.json().get("code")) for r in responses)
        # 40 hot + 40 spread purchases fit the wallets; the other 40 are short of funds.
        assert codes == {(201, None): 80, (400, "INSUFFICIENT_BALANCE"): 40}, codes
        seqs = sorted(int(r.json()["receipt_number"][-6:]) for r in responses
                      if r.status_code == 201)
        assert seqs == list(range(seqs[0], seqs[0] + 80))
        assert await clients[1].balance(hot["token"]) == 0
        audit = await api0.audit()
        assert audit["ok"], audit["problems"]
    finally:
        for c in clients:
            await c.close()
        for s in servers:
            s.stop()
