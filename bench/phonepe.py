"""PhonePe checkout throughput (issue 17): checkout sessions per second through the
official (blocking) PhonePe SDK on the adapter's threads, and callbacks applied per second,
each next to a bare baseline measured in the same run, interleaved.

    .venv/bin/python bench/phonepe.py [--backend sqlite|postgresql|both] [--requests 128]
                                      [--concurrency 64] [--duplicates 2] [--rounds 2]

Processes: `payguard sim --provider phonepe --port P` (its own callbacks dropped: this
script delivers them, so it controls their rate) and `payguard serve` with
PAYGUARD_SIMULATED_PROVIDER=phonepe, PAYGUARD_PHONEPE_API_BASE=http://127.0.0.1:P,
PAYGUARD_CURRENCY=INR and PhonePe's polling pushed out of the way (first check after 600 s).
Subjects:
  sessions   POST /api/checkout/sessions {topup_amount} (a new order each: 201); baseline:
             a bare httpx POST /checkout/v2/pay to the simulator with a token (the provider
             call alone, without the SDK, its thread hop or payguard's work)
  callbacks  POST /api/webhooks/phonepe of PG_ORDER_COMPLETED for orders paid at the
             simulator, --duplicates copies each, shuffled (the first fetches the order status
             and fulfils, the rest answer duplicate=true); baseline: the same authorized
             callback for an unknown order (check + record only)
ratio = subject requests/s / baseline requests/s.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import math
import random
import sys
import uuid
from typing import Any

import httpx
from _support import (
    Pair,
    Spawned,
    backends,
    base_env,
    bench_database,
    console,
    drive,
    expect,
    free_port,
    http_client,
    interleave,
    payguard_server,
    table,
    warn_if_starved,
)

CLIENT_ID, CLIENT_SECRET = "PAYGUARD_BENCH", "bench-secret-" + uuid.uuid4().hex[:8]
CB_USER, CB_PASS = "bench", "bench-cb-" + uuid.uuid4().hex[:8]
AUTH = hashlib.sha256(f"{CB_USER}:{CB_PASS}".encode()).hexdigest()


class Bench:
    def __init__(self, api: httpx.AsyncClient, sim: httpx.AsyncClient,
                 tokens: list[str], sim_token: str) -> None:
        self.api, self.sim, self.tokens, self.sim_token = api, sim, tokens, sim_token
        self.sessions: list[dict[str, Any]] = []
        self.applied = self.duplicates = 0

    async def create_session(self, i: int) -> None:
        r = expect(await self.api.post(
            "/api/checkout/sessions", json={"topup_amount": 1000 + i},
            headers={"Authorization": f"Bearer {self.tokens[i % len(self.tokens)]}",
                     "Idempotency-Key": str(uuid.uuid4())}), 201)
        self.sessions.append(r.json())

    async def provider_only(self, i: int) -> None:
        body = {"merchantOrderId": f"bench_{uuid.uuid4().hex[:16]}", "amount": 1000 + i,
                "expireAfter": 1860, "paymentFlow": {
                    "type": "PG_CHECKOUT", "message": "bench",
                    "merchantUrls": {"redirectUrl": "http://127.0.0.1/done"}}}
        expect(await self.sim.post("/checkout/v2/pay", json=body,
                                   headers={"Authorization": f"O-Bearer {self.sim_token}"}), 200)

    async def pay(self, merchant_order_id: str) -> dict[str, Any]:
        r = expect(await self.sim.post(f"/pay/{merchant_order_id}",
                                       json={"outcome": "success"}), 200)
        order: dict[str, Any] = r.json()
        return order

    async def deliver(self, body: bytes) -> None:
        r = expect(await self.api.post("/api/webhooks/phonepe", content=body, headers={
            "Authorization": AUTH, "Content-Type": "application/json"}), 200)
        if r.json().get("duplicate"):
            self.duplicates += 1
        else:
            self.applied += 1


def callback(order: dict[str, Any]) -> bytes:
    keys = ("merchantId", "merchantOrderId", "orderId", "state", "amount", "expireAt")
    return json.dumps({"event": "checkout.order.completed", "type": "PG_ORDER_COMPLETED",
                       "payload": {k: order.get(k) for k in keys}}).encode()


async def bench_backend(backend: str, args: argparse.Namespace) -> list[list[object]]:
    rows: list[list[object]] = []
    n, c, rounds, warmup, dups = (args.requests, args.concurrency, args.rounds, args.warmup,
                                  args.duplicates)

    def row(what: str, subject: str, baseline: str, pair: Pair, note: str = "") -> None:
        rows.append([backend, what, f"{subject} vs {baseline}", pair.subject.rate,
                     pair.baseline.rate, pair.ratio, pair.subject.percentile(50),
                     pair.subject.percentile(99), pair.baseline.percentile(50), note])

    async with bench_database(backend) as db:
        sim_port, api_port = free_port(), free_port()
        creds = {"PAYGUARD_PHONEPE_CLIENT_ID": CLIENT_ID,
                 "PAYGUARD_PHONEPE_CLIENT_SECRET": CLIENT_SECRET,
                 "PAYGUARD_PHONEPE_CALLBACK_USERNAME": CB_USER,
                 "PAYGUARD_PHONEPE_CALLBACK_PASSWORD": CB_PASS, "PAYGUARD_CURRENCY": "INR"}
        sim_dir = db.data_dir / "sim"
        sim_dir.mkdir()
        sim_env = base_env(db, {**creds, "PAYGUARD_DATA_DIR": str(sim_dir),
                                "PAYGUARD_SIM_DROP_WEBHOOKS": "1"})
        server_env = {**creds, "PAYGUARD_SIMULATED_PROVIDER": "phonepe",
                      "PAYGUARD_PHONEPE_API_BASE": f"http://127.0.0.1:{sim_port}",
                      "PAYGUARD_PHONEPE_POLL_FIRST": "600"}
        console.print(f"[dim]{backend}: starting payguard sim --provider phonepe and serve[/dim]")
        sim_proc = Spawned("sim", ["sim", "--provider", "phonepe", "--port", str(sim_port)],
                           sim_env, sim_port, "/stats", sim_dir)
        try:
            await sim_proc.wait_ready()
            async with payguard_server(db, workers=args.workers, env=server_env,
                                       port=api_port) as (url, admin), \
                    http_client(url, c) as api, http_client(sim_proc.url, c) as sim:
                admin_h = {"Authorization": f"Bearer {admin}"}
                tokens = [expect(await api.post("/api/admin/users", headers=admin_h, json={
                    "email": f"{uuid.uuid4().hex[:12]}@bench.test"}), 201).json()["token"]
                          for _ in range(c)]
                token = expect(await sim.post("/v1/oauth/token", data={
                    "client_id": CLIENT_ID, "client_secret": CLIENT_SECRET,
                    "grant_type": "client_credentials", "client_version": "1"}), 200)
                bench = Bench(api, sim, tokens, token.json()["access_token"])

                console.print(f"[dim]{backend}: checkout sessions[/dim]")
                row("sessions", "create", "provider call",
                    await interleave(bench.create_session, bench.provider_only,
                                     requests=n, concurrency=c, rounds=rounds, warmup=warmup))

                per = max(1, n // rounds)
                measured = per * rounds
                events = math.ceil(measured / dups)
                while len(bench.sessions) < events:
                    await drive(bench.create_session, events - len(bench.sessions), c,
                                offset=1_000_000 + len(bench.sessions))
                paid: list[dict[str, Any]] = []

                async def pay(i: int) -> None:
                    paid.append(await bench.pay(bench.sessions[i]["session_id"]))

                await drive(pay, events, c)
                deliveries = [callback(o) for o in paid for _ in range(dups)][:measured]
                random.Random(7).shuffle(deliveries)
                queue = iter(deliveries)

                async def deliver(_i: int) -> None:
                    await bench.deliver(next(queue))

                tag = uuid.uuid4().hex[:8]

                async def unknown(i: int) -> None:
                    await bench.deliver(callback({"merchantOrderId": f"none_{tag}_{i}",
                                                  "orderId": f"OMO_{tag}_{i}",
                                                  "state": "COMPLETED", "amount": 1}))

                if warmup:
                    await drive(unknown, warmup, c, offset=2_000_000)
                bench.applied = bench.duplicates = 0
                console.print(f"[dim]{backend}: callbacks ({dups} deliveries each)[/dim]")
                pair = await interleave(deliver, unknown, requests=measured, concurrency=c,
                                        rounds=rounds, offset=3_000_000)
                applied = bench.applied - pair.baseline.count
                row("callbacks", f"paid order x{dups}", "unknown order", pair,
                    f"{applied / pair.subject.seconds:.0f} orders applied/s "
                    f"({applied} applied, {bench.duplicates} dup)")
        finally:
            sim_proc.stop()
    return rows


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backend", choices=["sqlite", "postgresql", "both"], default="sqlite")
    parser.add_argument("--requests", type=int, default=128)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--duplicates", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=16)
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args()
    warn_if_starved(args)
    rows: list[list[object]] = []
    for backend in backends(args.backend):
        rows += await bench_backend(backend, args)
    table(f"PhonePe checkout, {args.concurrency} concurrent clients, {args.requests} per "
          f"measurement, {args.rounds} interleaved rounds, {args.duplicates} deliveries per "
          f"callback", ["backend", "what", "subject vs baseline", "subject/s", "baseline/s",
                        "ratio", "p50 ms", "p99 ms", "base p50 ms", "note"], rows)
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
