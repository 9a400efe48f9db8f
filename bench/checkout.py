"""Card checkout throughput (issue 5): checkout sessions created per second and webhook
events applied per second (with duplicate deliveries), each next to a bare baseline
measured in the same run, interleaved, with the simulated provider in its own process.

    .venv/bin/python bench/checkout.py [--backend sqlite|postgresql|both] [--requests 128]
                                       [--concurrency 64] [--duplicates 2] [--rounds 2]

Processes: `payguard sim --port P` (webhooks dropped: this script delivers them itself, so
it controls their rate and concurrency) and `payguard serve` with
PAYGUARD_STRIPE_API_BASE=http://127.0.0.1:P; both share PAYGUARD_STRIPE_WEBHOOK_SECRET.
Subjects:
  sessions  POST /api/checkout/sessions {topup_amount} with an Idempotency-Key (client i
            is user i % concurrency, each request a distinct amount so each is a new
            session: 201); baseline: a bare httpx POST to the simulator's
            /v1/checkout/sessions with the same form fields (the provider call alone)
  webhooks  signed POST /api/webhooks/stripe of checkout.session.completed for sessions
            paid at the simulator, each event sent --duplicates times in shuffled order
            (the first copy fulfils, the others answer duplicate=true); baseline: the same
            signed POST for an unknown session (verify + record only)
ratio = subject requests/s / baseline requests/s. Exits 2 if the server lacks the endpoints.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import random
import sys
import time
import uuid
from typing import Any

import httpx
from _support import (
    BenchDb,
    Buyer,
    Op,
    Pair,
    backends,
    bench_database,
    console,
    drive,
    expect,
    free_port,
    http_client,
    interleave,
    open_database,
    payguard_server,
    seed_buyers,
    simulator,
    stripe_signature,
    table,
    warn_if_starved,
)

SECRET = "whsec_payguard_bench_" + uuid.uuid4().hex[:8]
API_KEY = "sk_test_payguard_simulated"
REQUIRED = ("/api/checkout/sessions", "/api/webhooks/stripe")


class MissingEndpoints(Exception):
    pass


async def check_endpoints(client: httpx.AsyncClient) -> None:
    paths = expect(await client.get("/api/openapi.json"), 200).json().get("paths", {})
    missing = [p for p in REQUIRED if p not in paths]
    if missing:
        raise MissingEndpoints(", ".join(missing))


def provider_form(i: int, amount: int) -> dict[str, str]:
    """The fields payguard's Stripe adapter sends, form-encoded as the SDK does."""
    ref = f"pur_bench_{uuid.uuid4().hex[:12]}"
    return {
        "mode": "payment",
        "line_items[0][quantity]": "1",
        "line_items[0][price_data][currency]": "usd",
        "line_items[0][price_data][unit_amount]": str(amount),
        "line_items[0][price_data][product_data][name]": f"Top-up {i}",
        "success_url": "http://127.0.0.1/success?session_id={CHECKOUT_SESSION_ID}",
        "cancel_url": "http://127.0.0.1/cancel",
        "expires_at": str(int(time.time()) + 1860),
        "client_reference_id": ref,
        "metadata[purchase_id]": ref,
        "payment_intent_data[metadata][purchase_id]": ref,
    }


def event_body(event_id: str, session: dict[str, Any]) -> bytes:
    return json.dumps({
        "id": event_id, "object": "event", "type": "checkout.session.completed",
        "api_version": "2024-06-20", "created": int(time.time()), "livemode": False,
        "pending_webhooks": 1, "request": {"id": None, "idempotency_key": None},
        "data": {"object": session},
    }, separators=(",", ":")).encode()


class Checkout:
    def __init__(self, api: httpx.AsyncClient, sim: httpx.AsyncClient,
                 buyers: list[Buyer]) -> None:
        self.api = api
        self.sim = sim
        self.buyers = buyers
        self.sessions: list[dict[str, Any]] = []  # created by the subject, paid later
        self.duplicates = 0
        self.applied = 0

    async def create_session(self, i: int) -> None:
        buyer = self.buyers[i % len(self.buyers)]
        r = expect(await self.api.post(
            "/api/checkout/sessions", json={"topup_amount": 1000 + i},
            headers={"Authorization": f"Bearer {buyer.token}",
                     "Idempotency-Key": str(uuid.uuid4())}), 201)
        self.sessions.append(r.json())

    async def provider_only(self, i: int) -> None:
        expect(await self.sim.post(
            "/v1/checkout/sessions", data=provider_form(i, 1000 + i),
            headers={"Authorization": f"Bearer {API_KEY}",
                     "Idempotency-Key": str(uuid.uuid4())}), 200)

    async def pay(self, session_id: str) -> dict[str, Any]:
        r = expect(await self.sim.post(f"/checkout/{session_id}/pay",
                                       json={"outcome": "succeeded"}), 200)
        session: dict[str, Any] = r.json()["session"]
        if session.get("payment_status") != "paid":
            raise RuntimeError(f"session {session_id} not paid: {session}")
        return session

    async def deliver(self, body: bytes) -> None:
        r = expect(await self.api.post(
            "/api/webhooks/stripe", content=body,
            headers={"Stripe-Signature": stripe_signature(SECRET, body),
                     "Content-Type": "application/json"}), 200)
        if r.json().get("duplicate"):
            self.duplicates += 1
        else:
            self.applied += 1


def unknown_session_op(checkout: Checkout) -> Op:
    tag = uuid.uuid4().hex[:8]

    async def op(i: int) -> None:
        session: dict[str, Any] = {"id": f"cs_test_unknown_{tag}_{i}", "object": "checkout.session",
                   "payment_status": "paid", "status": "complete", "metadata": {},
                   "client_reference_id": None}
        await checkout.deliver(event_body(f"evt_bench_unknown_{tag}_{i}", session))

    return op


async def bench_backend(backend: str, args: argparse.Namespace) -> list[list[object]]:
    rows: list[list[object]] = []
    n, c, rounds, warmup, dups = (args.requests, args.concurrency, args.rounds, args.warmup,
                                  args.duplicates)

    def row(what: str, subject: str, baseline: str, pair: Pair, note: str = "") -> None:
        rows.append([backend, what, f"{subject} vs {baseline}", pair.subject.rate,
                     pair.baseline.rate, pair.ratio, pair.subject.percentile(50),
                     pair.subject.percentile(99), pair.baseline.percentile(50), note])

    async with bench_database(backend) as db:
        database = open_database(db)
        console.print(f"[dim]{backend}: seeding {c} buyers[/dim]")
        buyers = await seed_buyers(database, db.settings(), c, balance=0)
        await database.dispose()

        sim_port, api_port = free_port(), free_port()
        sim_dir = db.data_dir / "sim"
        sim_dir.mkdir()
        sim_env = {
            "PAYGUARD_DATA_DIR": str(sim_dir),
            "PAYGUARD_STRIPE_WEBHOOK_SECRET": SECRET,
            "PAYGUARD_SIM_WEBHOOK_URL": f"http://127.0.0.1:{api_port}/api/webhooks/stripe",
            "PAYGUARD_SIM_DROP_WEBHOOKS": "1",
        }
        server_env = {
            "PAYGUARD_STRIPE_API_BASE": f"http://127.0.0.1:{sim_port}",
            "PAYGUARD_STRIPE_WEBHOOK_SECRET": SECRET,
        }
        console.print(f"[dim]{backend}: starting payguard sim and payguard serve[/dim]")
        async with simulator(BenchDb(db.backend, db.url, sim_dir), port=sim_port,
                             env=sim_env) as sim_url, \
                payguard_server(db, workers=args.workers, env=server_env,
                                port=api_port) as (url, _admin), \
                http_client(url, c) as api, http_client(sim_url, c) as sim:
            await check_endpoints(api)
            checkout = Checkout(api, sim, buyers)

            console.print(f"[dim]{backend}: checkout sessions[/dim]")
            row("sessions", "create", "provider call",
                await interleave(checkout.create_session, checkout.provider_only,
                                 requests=n, concurrency=c, rounds=rounds, warmup=warmup))

            # Webhooks: every delivery is for a session our server created and the
            # simulator marked paid; `dups` copies of each event, shuffled.
            per = max(1, n // rounds)
            measured = per * rounds
            events = math.ceil(measured / dups)
            while len(checkout.sessions) < events:
                await drive(checkout.create_session, events - len(checkout.sessions), c,
                            offset=1_000_000 + len(checkout.sessions))
            console.print(f"[dim]{backend}: paying {events} sessions at the simulator[/dim]")
            paid: list[dict[str, Any]] = []

            async def pay(i: int) -> None:
                paid.append(await checkout.pay(checkout.sessions[i]["session_id"]))

            await drive(pay, events, c)
            tag = uuid.uuid4().hex[:8]
            bodies = [event_body(f"evt_bench_{tag}_{i}", s) for i, s in enumerate(paid)]
            deliveries = [b for b in bodies for _ in range(dups)][:measured]
            random.Random(7).shuffle(deliveries)
            queue = iter(deliveries)

            async def webhook(_i: int) -> None:
                await checkout.deliver(next(queue))

            baseline = unknown_session_op(checkout)
            if warmup:  # warm the verify/record path on both sides without using up events
                await drive(baseline, warmup, c, offset=2_000_000)
            checkout.duplicates = checkout.applied = 0
            console.print(f"[dim]{backend}: webhooks ({dups} deliveries per event)[/dim]")
            pair = await interleave(webhook, baseline, requests=measured, concurrency=c,
                                    rounds=rounds, offset=3_000_000)
            # The baseline's deliveries are all "applied" (new event ids): subtract them.
            applied = checkout.applied - pair.baseline.count
            row("webhooks", f"paid session x{dups}", "unknown session", pair,
                f"{applied / pair.subject.seconds:.0f} events applied/s "
                f"({applied} applied, {checkout.duplicates} dup)")
    return rows


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backend", choices=["sqlite", "postgresql", "both"], default="sqlite",
                        help="sqlite (default: needs no service), postgresql, or both")
    parser.add_argument("--requests", type=int, default=128,
                        help="requests per measurement (split over the rounds)")
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--duplicates", type=int, default=2,
                        help="deliveries of each webhook event")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=16, help="unmeasured calls per side")
    parser.add_argument("--workers", type=int, default=1, help="payguard serve --workers")
    args = parser.parse_args()
    warn_if_starved(args)
    rows: list[list[object]] = []
    for backend in backends(args.backend):
        try:
            rows += await bench_backend(backend, args)
        except MissingEndpoints as exc:
            console.print(f"[bold red]The payguard server lacks the checkout endpoints "
                          f"({exc}) in /api/openapi.json: nothing to measure.[/bold red]")
            return 2
    table(f"checkout, {args.concurrency} concurrent clients, {args.requests} per "
          f"measurement, {args.rounds} interleaved rounds, {args.duplicates} deliveries "
          f"per webhook event", ["backend", "what", "subject vs baseline", "subject/s",
                                 "baseline/s", "ratio", "p50 ms", "p99 ms", "base p50 ms",
                                 "note"], rows)
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
