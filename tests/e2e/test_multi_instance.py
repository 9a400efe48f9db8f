"""Three `payguard serve` processes on one PostgreSQL, Redis locks, one shared simulator.

In-memory locks cannot hold across processes; these races prove that payguard's do.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from tests.support.api import ApiClient, checkout, create_program, pay, wait_for_status
from tests.support.server import LiveServer, free_port


class Cluster:
    def __init__(self, servers: list[LiveServer], clients: list[ApiClient]) -> None:
        self.servers, self.clients = servers, clients
        self.extra_clients: list[ApiClient] = []

    def client(self, i: int) -> ApiClient:
        return self.clients[i % len(self.clients)]


def _start_simulator(data_dir: Path, port: int, webhook_url: str) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PAYGUARD_")}
    env.update(PAYGUARD_DATA_DIR=str(data_dir), PAYGUARD_SIM_WEBHOOK_URL=webhook_url,
               PAYGUARD_PUBLIC_URL=f"http://127.0.0.1:{port}")
    data_dir.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen([sys.executable, "-m", "payguard", "sim", "--port", str(port)],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            httpx.get(f"http://127.0.0.1:{port}/v1/checkout/sessions/none", timeout=1)
            return proc
        except httpx.HTTPError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError("simulator did not start")


@pytest.fixture
async def cluster(pg_url: str, redis_url: str, tmp_path: Path) -> AsyncIterator[Cluster]:
    sim_port, ports = free_port(), [free_port() for _ in range(3)]
    sim = _start_simulator(tmp_path / "sim", sim_port,
                           f"http://127.0.0.1:{ports[0]}/api/webhooks/stripe")
    env = {"PAYGUARD_REDIS_URL": redis_url, "PAYGUARD_LOCK_BACKEND": "redis",
           "PAYGUARD_STRIPE_API_BASE": f"http://127.0.0.1:{sim_port}"}
    servers = [LiveServer(tmp_path / f"node{i}", pg_url, env=env, port=p)
               for i, p in enumerate(ports)]
    admin = servers[0].admin_token
    cluster = Cluster(servers, [])
    try:
        for s in servers:
            s.admin_token = admin
            s.start()
            cluster.clients.append(ApiClient(s.url, admin))
        yield cluster
    finally:
        for c in [*cluster.clients, *cluster.extra_clients]:
            await c.close()
        for s in servers:
            s.stop()
        sim.terminate()
        sim.wait(timeout=10)


async def test_class_rep_limit_holds_across_three_processes(cluster: Cluster) -> None:
    api0 = cluster.client(0)
    program = await create_program(api0, limit=10)
    users = await asyncio.gather(*(api0.create_user() for _ in range(15)))
    body = {"program_id": program["id"], "class_rep": True}
    responses = await asyncio.gather(*(checkout(cluster.client(i), u["token"], body)
                                       for i, u in enumerate(users)))
    codes = Counter((r.status_code, r.json().get("code")) for r in responses)
    assert codes == {(201, None): 10, (409, "CLASS_REP_LIMIT_REACHED"): 5}
    winners = [(i, u, r.json()) for i, (u, r) in enumerate(zip(users, responses, strict=True))
               if r.status_code == 201]
    # Pay through the shared simulator; webhooks reach instance 0, reads go anywhere.
    await asyncio.gather(*(pay(simulator_client(cluster, s), s["session_id"], prefix="")
                           for _, _, s in winners))
    for i, u, s in winners:
        await wait_for_status(cluster.client(i + 1), u["token"], s["purchase_id"], "completed")
    r = await cluster.client(2).http.get(f"/api/programs/{program['id']}",
                                         headers=api0.auth(users[0]["token"]))
    assert r.json()["class_rep_taken"] == 10
    audit = await api0.audit()
    assert audit["ok"], audit["problems"]


def simulator_client(cluster: Cluster, session: dict[str, str]) -> ApiClient:
    """An ApiClient whose base URL is the simulator that owns the session's hosted page."""
    base = session["url"].split("/checkout/")[0]
    client = ApiClient(base, cluster.clients[0].admin_token)
    cluster.extra_clients.append(client)  # closed with the cluster
    return client


async def test_double_click_across_instances_makes_one_session(cluster: Cluster) -> None:
    api0 = cluster.client(0)
    product = await api0.create_product(1_200, 5)
    user = await api0.create_user()
    responses = await asyncio.gather(*(checkout(cluster.client(i), user["token"],
                                                {"product_id": product["id"]})
                                       for i in range(9)))
    statuses = Counter((r.status_code, r.json().get("code")) for r in responses)
    assert statuses[(201, None)] == 1, statuses
    assert set(statuses) <= {(201, None), (200, None), (409, "PAYMENT_IN_PROGRESS")}
    assert len({r.json()["session_id"] for r in responses if r.status_code < 300}) == 1
    listed = await cluster.client(1).http.get("/api/purchases",
                                              headers=api0.auth(user["token"]))
    assert len(listed.json()) == 1


async def test_wallet_and_receipts_hold_across_three_processes(cluster: Cluster) -> None:
    api0 = cluster.client(0)
    product = await api0.create_product(300, 200)
    user = await api0.create_user(balance=30 * 300)
    responses = await asyncio.gather(*(cluster.client(i).purchase(user["token"], product["id"])
                                       for i in range(90)))
    codes = Counter((r.status_code, r.json().get("code")) for r in responses)
    assert codes == {(201, None): 30, (400, "INSUFFICIENT_BALANCE"): 60}
    seqs = sorted(int(r.json()["receipt_number"][-6:]) for r in responses
                  if r.status_code == 201)
    assert seqs == list(range(seqs[0], seqs[0] + 30))
    assert await cluster.client(2).balance(user["token"]) == 0
    audit = await api0.audit()
    assert audit["ok"], audit["problems"]
