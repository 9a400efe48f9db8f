"""The cost of the idempotency layer on the purchase path (issue 3), each subject next to
its baseline in the same run, interleaved, plus replay latency over HTTP.

    .venv/bin/python bench/idempotency.py [--backend sqlite|postgresql|both]
                                          [--requests 128] [--concurrency 64] [--rounds 2]

POST /api/purchases requires an Idempotency-Key, so "without a key" exists only below HTTP:
  service  guard fresh key   IdempotencyGuard.execute (claim committed on its own, then
                             purchase + stored response in one transaction), a new key each
                             time; baseline: the same purchase via Database.transaction directly
  service  guard replay      IdempotencyGuard.execute with a key that already completed
                             (one read, no purchase); baseline: the direct purchase
  http     keyed replay      POST /api/purchases re-sending a completed key (answered from
                             the stored response, `Idempotent-Replayed: true`); baseline:
                             the keyed purchase itself (new key)
Every client is a different user (one wallet each, one shared 1-cent product), so a hot
wallet row doesn't hide the layer's own cost. p50/p99 are per-call latencies at the given
concurrency (a closed loop: each client sends again as soon as it has its answer).
ratio = subject calls/s / baseline calls/s.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

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
    http_client,
    interleave,
    items_needed,
    open_database,
    payguard_server,
    seed_buyers,
    seed_product,
    table,
    warn_if_starved,
)

from payguard.api.deps import json_response
from payguard.api.problems import render_error
from payguard.idempotency import Claim, IdempotencyGuard, StoredResponse
from payguard.service.principal import Principal
from payguard.service.purchases import purchase_with_wallet
from payguard.store.uow import Database, UnitOfWork

FUNDS = 50_000_000
Effects = Callable[[UnitOfWork, Claim | None], Awaitable[StoredResponse]]
PATH = "/api/purchases"


class ServicePurchases:
    """The purchase the HTTP handler runs, called directly or through the guard."""

    def __init__(self, database: Database, db: BenchDb, buyers: list[Buyer],
                 product_id: str) -> None:
        self.database = database
        self.settings = db.settings()
        self.principals = [Principal("user", b.user_id) for b in buyers]
        self.product_id = product_id
        # The body the route would have received: the guard fingerprints it.
        self.body = json.dumps({"product_id": product_id, "quantity": 1}).encode()
        self.guard = IdempotencyGuard(
            database, ttl=self.settings.idempotency_ttl,
            lock_timeout=self.settings.idempotency_lock_timeout, render_error=render_error)
        self.tag = uuid.uuid4().hex[:8]

    def _effects(self, user: Principal) -> Effects:
        async def effects(uow: UnitOfWork, _claim: Claim | None) -> StoredResponse:
            purchase = await purchase_with_wallet(uow.conn, self.settings, user,
                                                  product_id=self.product_id, quantity=1)
            return json_response(purchase, 201)
        return effects

    async def direct(self, i: int) -> None:
        effects = self._effects(self.principals[i % len(self.principals)])

        await self.database.transaction(lambda uow: effects(uow, None))

    async def guarded(self, i: int, *, expect_replay: bool = False) -> None:
        user = self.principals[i % len(self.principals)]
        outcome = await self.guard.execute(
            principal=user.scope, key=f"{self.tag}-{i}", method="POST", path=PATH,
            body=self.body, effects=self._effects(user))
        if outcome.response.status != 201 or outcome.replayed != expect_replay:
            raise RuntimeError(f"unexpected outcome {outcome}")

    def replay_of(self, start: int, count: int) -> Op:
        """Replays of the completed keys ``start .. start+count-1``."""
        async def op(i: int) -> None:
            await self.guarded(start + i % count, expect_replay=True)
        return op


def http_ops(client: Any, buyers: list[Buyer], product_id: str, tag: str,
             completed: int) -> tuple[Op, Op]:
    """(fresh keyed purchase, replay of one of the first ``completed`` keys)."""
    body = {"product_id": product_id, "quantity": 1}

    def headers(i: int) -> dict[str, str]:
        return {"Authorization": f"Bearer {buyers[i % len(buyers)].token}",
                "Idempotency-Key": f"{tag}-{i}"}

    async def purchase(i: int) -> None:
        expect(await client.post(PATH, json=body, headers=headers(i)), 201)

    async def replay(i: int) -> None:
        r = expect(await client.post(PATH, json=body, headers=headers(i % completed)), 201)
        if r.headers.get("idempotent-replayed") != "true":
            raise RuntimeError("expected a replay")

    return purchase, replay


async def bench_backend(backend: str, args: argparse.Namespace) -> list[list[object]]:
    rows: list[list[object]] = []
    n, c, rounds, warmup = args.requests, args.concurrency, args.rounds, args.warmup

    def row(level: str, subject: str, baseline: str, pair: Pair) -> None:
        rows.append([backend, level, f"{subject} vs {baseline}", pair.subject.rate,
                     pair.baseline.rate, pair.ratio,
                     pair.subject.percentile(50), pair.subject.percentile(99),
                     pair.baseline.percentile(50), pair.baseline.percentile(99)])

    async with bench_database(backend) as db:
        settings = db.settings()
        database = open_database(db)
        console.print(f"[dim]{backend}: seeding {c} buyers and a product[/dim]")
        buyers = await seed_buyers(database, settings, c, balance=FUNDS)
        # Purchases: service fresh-key pair (both sides buy), replay seeding, service
        # replay pair (the baseline buys), HTTP seeding + the HTTP pair's purchase side.
        product = await seed_product(database, settings, price=1,
                                     items=4 * items_needed(n, rounds, warmup) + 3 * c + n)
        svc = ServicePurchases(database, db, buyers, product)

        console.print(f"[dim]{backend}: service guard fresh key[/dim]")
        row("service", "guard fresh key", "direct", await interleave(
            svc.guarded, svc.direct, requests=n, concurrency=c, rounds=rounds,
            warmup=warmup))
        # Complete c keys in a range of their own, then time replays of them.
        replayed = 10_000_000
        await drive(svc.guarded, c, c, offset=replayed)
        console.print(f"[dim]{backend}: service guard replay[/dim]")
        row("service", "guard replay", "direct", await interleave(
            svc.replay_of(replayed, c), svc.direct, requests=n, concurrency=c, rounds=rounds,
            warmup=warmup, offset=20_000_000))
        await database.dispose()

        console.print(f"[dim]{backend}: starting payguard serve[/dim]")
        async with payguard_server(db, workers=args.workers) as (url, _admin), \
                http_client(url, c) as client:
            tag = uuid.uuid4().hex[:8]
            completed = max(c, n // rounds)
            purchase, replay = http_ops(client, buyers, product, tag, completed)
            # Keys 0..completed-1 exist before any replay is timed; the pair's own
            # purchases use later indices (offset), so they are always fresh keys.
            await drive(purchase, completed, c)
            console.print(f"[dim]{backend}: http replay vs purchase[/dim]")
            row("http", "keyed replay", "keyed purchase", await interleave(
                replay, purchase, requests=n, concurrency=c, rounds=rounds, warmup=warmup,
                offset=completed))
    return rows


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backend", choices=["sqlite", "postgresql", "both"], default="sqlite",
                        help="sqlite (default: needs no service), postgresql, or both")
    parser.add_argument("--requests", type=int, default=128,
                        help="calls per measurement (split over the rounds)")
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=16, help="unmeasured calls per side")
    parser.add_argument("--workers", type=int, default=1, help="payguard serve --workers")
    args = parser.parse_args()
    warn_if_starved(args)
    rows: list[list[object]] = []
    for backend in backends(args.backend):
        rows += await bench_backend(backend, args)
    table(f"idempotency layer on the purchase path, {args.concurrency} concurrent clients, "
          f"{args.requests} per measurement, {args.rounds} interleaved rounds",
          ["backend", "level", "subject vs baseline", "subject/s", "baseline/s", "ratio",
           "p50 ms", "p99 ms", "base p50 ms", "base p99 ms"], rows)
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
