"""The service-charge storm on three `payguard serve` processes sharing one PostgreSQL,
Redis locks and one standalone PhonePe simulator (`payguard sim --provider phonepe`).

Each process keeps at most PAYGUARD_PROVIDER_CONCURRENCY SDK calls in flight, so the
simulator, which sees every call, must never see more than three times that at once.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from tests.e2e.test_phonepe import TOPUP, assert_contiguous
from tests.support.api import ApiClient, wait_for_status
from tests.support.phonepe import PHONEPE_ENV, pay_phonepe, retry_checkout, sim_stats
from tests.support.server import LiveServer, free_port

PER_INSTANCE = 4


def _start_phonepe_sim(data_dir: Path, port: int, callback_url: str) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PAYGUARD_")}
    env.update(PAYGUARD_DATA_DIR=str(data_dir), PAYGUARD_SIM_PHONEPE_CALLBACK_URL=callback_url,
               PAYGUARD_SIM_LATENCY_MS="10", PAYGUARD_CURRENCY="INR")
    data_dir.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen([sys.executable, "-m", "payguard", "sim", "--provider", "phonepe",
                             "--port", str(port)], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            httpx.get(f"http://127.0.0.1:{port}/stats", timeout=1)
            return proc
        except httpx.HTTPError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError("PhonePe simulator did not start")


@pytest.fixture
async def nodes(pg_url: str, redis_url: str,
                tmp_path: Path) -> AsyncIterator[tuple[list[ApiClient], ApiClient]]:
    sim_port, ports = free_port(), [free_port() for _ in range(3)]
    # Callbacks reach instance 1; checkouts and reads go to all three.
    sim = _start_phonepe_sim(tmp_path / "sim", sim_port,
                             f"http://127.0.0.1:{ports[1]}/api/webhooks/phonepe")
    # PhonePe's own polling schedule (first look after 20 s): the callbacks do the work here.
    env = {**PHONEPE_ENV, "PAYGUARD_PHONEPE_POLL_FIRST": "20", "PAYGUARD_PHONEPE_POLL_SCALE": "1",
           "PAYGUARD_REDIS_URL": redis_url, "PAYGUARD_LOCK_BACKEND": "redis",
           "PAYGUARD_PHONEPE_API_BASE": f"http://127.0.0.1:{sim_port}",
           "PAYGUARD_PROVIDER_CONCURRENCY": str(PER_INSTANCE), "PAYGUARD_PROVIDER_QUEUE": "20"}
    servers = [LiveServer(tmp_path / f"node{i}", pg_url, env=env, port=p)
               for i, p in enumerate(ports)]
    clients: list[ApiClient] = []
    simulator = ApiClient(f"http://127.0.0.1:{sim_port}", "")
    try:
        for s in servers:
            s.admin_token = servers[0].admin_token
        servers[0].start()  # migrates the fresh database; then the others at once
        await asyncio.gather(*(asyncio.to_thread(s.start) for s in servers[1:]))
        clients.extend(ApiClient(s.url, s.admin_token) for s in servers)
        yield clients, simulator
    finally:
        for c in [*clients, simulator]:
            await c.close()
        for s in servers:
            s.stop()
        sim.terminate()
        sim.wait(timeout=10)


async def test_120_users_pay_through_phonepe_on_three_instances(
        nodes: tuple[list[ApiClient], ApiClient]) -> None:
    clients, simulator = nodes
    users = await asyncio.gather(*(clients[0].create_user() for _ in range(120)))
    results = await asyncio.gather(*(retry_checkout(clients[i % 3], u["token"],
                                                    {"topup_amount": TOPUP})
                                     for i, u in enumerate(users)))
    assert all(r.status_code == 201 for r, _ in results), [r.text for r, _ in results][:3]
    sessions = [r.json() for r, _ in results]
    assert len({s["session_id"] for s in sessions}) == 120
    await asyncio.gather(*(pay_phonepe(simulator, s["session_id"], prefix="")
                           for s in sessions))
    done = await asyncio.gather(*(wait_for_status(clients[(i + 1) % 3], u["token"],
                                                  s["purchase_id"], "completed", within=90)
                                  for i, (u, s) in enumerate(zip(users, sessions,
                                                                 strict=True))))
    assert_contiguous([p["receipt_number"] for p in done])
    balances = await asyncio.gather(*(clients[2].balance(u["token"]) for u in users))
    assert balances == [TOPUP] * 120
    stats = await sim_stats(simulator.http, prefix="")
    assert 1 <= stats["max_in_flight"] <= 3 * PER_INSTANCE, stats
    print(f"gateway calls {stats['calls']}, at most {stats['max_in_flight']} in flight "
          f"(limit {PER_INSTANCE} per instance x 3); "
          f"{sum(n for _, n in results)} checkout retries after 503")
    audit = await clients[0].audit()
    assert audit["ok"], audit["problems"]
