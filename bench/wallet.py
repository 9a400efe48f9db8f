"""Wallet purchases per second (issues 2 and 10): one hot wallet and spread over many
wallets, on SQLite and PostgreSQL, each next to a baseline measured in the same run on the
same database, in interleaved rounds.

    .venv/bin/python bench/wallet.py [--backend sqlite|postgresql|both] [--requests 256]
                                     [--concurrency 64] [--rounds 2] [--workers 1]
                                     [--repeat 1] [--service] [--instances 3]

Subjects (every purchase: 1 item of a 1-cent product, status 201/completed):
  http      POST /api/purchases with a fresh Idempotency-Key against a spawned
            `payguard serve --workers N` (auth, key claim and stored response, wallet
            debit, revenue credit, two ledger entries, stock counter and item, order
            number, purchase row, receipt number), group-committed by the batch writer
  service   (--service) Database.transaction(purchase_with_wallet) in this process, one
            purchase per transaction (no batching), next to the bare conditional debit
Shapes:
  hot       every client buys from the same wallet
  spread    client i buys from wallet i (one wallet per concurrent client)
Baseline for http: the hand-written app of bench/baseline_app.py (minimal FastAPI +
  asyncpg / aiosqlite, one conditional debit and one journal insert per request
  transaction) on the same uvicorn with the same number of workers, same shape, same
  concurrency, same database.
Baseline for service: the bare conditional debit `UPDATE accounts SET balance = balance -
  :a WHERE id = :id AND balance >= :a RETURNING balance`, one statement per transaction.
ratio = payguard purchases/s / baseline purchases/s. "batch" is the mean number of
  commands per group-commit batch during the measurement (payguard_batch_size).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import re
import sys
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiosqlite
import asyncpg
import baseline_app
from _support import (
    BenchDb,
    Buyer,
    Op,
    Spawned,
    backends,
    base_env,
    bench_database,
    console,
    expect,
    free_port,
    http_client,
    interleave,
    items_needed,
    open_database,
    payguard_server,
    seed_buyers,
    seed_product,
    server_cpu,
    table,
    warn_if_starved,
)
from sqlalchemy import insert

from payguard.clock import utcnow
from payguard.service.principal import Principal
from payguard.service.purchases import purchase_with_wallet
from payguard.store.engine import SQLITE_BUSY_TIMEOUT_MS
from payguard.store.schema import accounts
from payguard.store.uow import Database, UnitOfWork

DEBIT = ("UPDATE accounts SET balance = balance - {a} WHERE id = {id} AND balance >= {a} "
         "RETURNING balance")
PG_BASELINE_POOL = 20  # payguard's create_engine pool_size
SQLITE_BASELINE_POOL = 8  # payguard's SQLite pool_size
FUNDS = 50_000_000  # cents per wallet: never the limiting factor at 1 cent a purchase


# --------------------------------------------------------------------------- baseline

async def seed_bare_accounts(database: Database, ids: list[str]) -> None:
    async def make(uow: UnitOfWork) -> None:
        await uow.conn.execute(insert(accounts), [
            {"id": i, "owner_id": None, "kind": "wallet", "currency": "USD",
             "balance": FUNDS, "allow_negative": False, "created_at": utcnow()}
            for i in ids
        ])

    await database.transaction(make)


@asynccontextmanager
async def bare_debit(db: BenchDb) -> AsyncIterator[Any]:
    """Yields ``debit(account_id)``: one conditional UPDATE, autocommitted."""
    if db.backend == "postgresql":
        dsn = db.url.replace("postgresql://", "postgres://", 1)
        # Same durability as payguard's engine: synchronous_commit=on.
        pool = await asyncpg.create_pool(dsn, min_size=PG_BASELINE_POOL,
                                         max_size=PG_BASELINE_POOL,
                                         server_settings={"synchronous_commit": "on"})
        sql = DEBIT.format(a="$1", id="$2")

        async def pg_debit(account_id: str) -> None:
            async with pool.acquire() as conn:
                if await conn.fetchval(sql, 1, account_id) is None:
                    raise RuntimeError("bare debit refused")

        try:
            yield pg_debit
        finally:
            await pool.close()
        return

    path = db.url.removeprefix("sqlite:///")
    conns: asyncio.Queue[aiosqlite.Connection] = asyncio.Queue()
    opened = []
    for _ in range(SQLITE_BASELINE_POOL):
        conn = await aiosqlite.connect(path, isolation_level=None,
                                       timeout=SQLITE_BUSY_TIMEOUT_MS / 1000)
        for pragma in ("journal_mode=WAL", "synchronous=FULL",
                       f"busy_timeout={SQLITE_BUSY_TIMEOUT_MS}"):
            await conn.execute(f"PRAGMA {pragma}")
        opened.append(conn)
        conns.put_nowait(conn)
    sql = DEBIT.format(a=":a", id=":id")

    async def sqlite_debit(account_id: str) -> None:
        conn = await conns.get()
        try:
            async with conn.execute(sql, {"a": 1, "id": account_id}) as cur:
                if await cur.fetchone() is None:
                    raise RuntimeError("bare debit refused")
        finally:
            conns.put_nowait(conn)

    try:
        yield sqlite_debit
    finally:
        for conn in opened:
            await conn.close()


# --------------------------------------------------------------------------- subjects

def service_purchase(database: Database, db: BenchDb, buyers: list[Buyer],
                     product_id: str) -> Op:
    settings = db.settings()
    principals = [Principal("user", b.user_id) for b in buyers]

    async def op(i: int) -> None:
        user = principals[i % len(principals)]

        await database.transaction(lambda uow: purchase_with_wallet(
            uow.conn, settings, user, product_id=product_id, quantity=1))

    return op


def http_purchase(client: Any, buyers: list[Buyer], product_id: str) -> Op:
    body = {"product_id": product_id, "quantity": 1}

    async def op(i: int) -> None:
        buyer = buyers[i % len(buyers)]
        expect(await client.post("/api/purchases", json=body, headers={
            "Authorization": f"Bearer {buyer.token}", "Idempotency-Key": str(uuid.uuid4()),
        }), 201)

    return op


# --------------------------------------------------------------------------- baseline app

@asynccontextmanager
async def baseline_server(db: BenchDb, wallets: list[str], *, workers: int
                          ) -> AsyncIterator[str]:
    """bench/baseline_app.py under uvicorn on ``db``, its wallets seeded; yields its URL."""
    if db.backend == "postgresql":
        conn = await asyncpg.connect(db.url.replace("postgresql://", "postgres://", 1))
        try:
            for stmt in baseline_app.schema(db.backend):
                await conn.execute(stmt)
            await conn.executemany("INSERT INTO bench_wallets (id, balance) VALUES ($1, $2)",
                                   [(w, FUNDS) for w in wallets])
        finally:
            await conn.close()
    else:
        async with aiosqlite.connect(db.url.removeprefix("sqlite:///")) as conn:
            for stmt in baseline_app.schema(db.backend):
                await conn.execute(stmt)
            await conn.executemany("INSERT INTO bench_wallets (id, balance) VALUES (?, ?)",
                                   [(w, FUNDS) for w in wallets])
            await conn.commit()
    port = free_port()
    server = Spawned(
        "baseline", ["baseline_app:create_app", "--factory", "--app-dir",
                     str(Path(__file__).parent), "--host", "127.0.0.1", "--port", str(port),
                     "--workers", str(workers), "--loop", "uvloop", "--http", "httptools",
                     "--no-access-log", "--log-level", "warning",
                     "--timeout-keep-alive", "30"],  # as `payguard serve`
        base_env(db, {"BASELINE_DATABASE_URL": db.url}), port, "/healthz", db.data_dir,
        module="uvicorn")
    try:
        await server.wait_ready(limit=120.0)
        yield server.url
    finally:
        server.stop()


def baseline_purchase(client: Any, wallets: list[str]) -> Op:
    async def op(i: int) -> None:
        expect(await client.post("/purchase", json={"wallet": wallets[i % len(wallets)]}),
               201)

    return op


async def batch_totals(client: Any) -> tuple[float, float]:
    """(commands, batches) so far, from payguard's payguard_batch_size histogram."""
    text = (await client.get("/metrics")).text
    total = re.search(r"^payguard_batch_size_sum (\S+)$", text, re.M)
    count = re.search(r"^payguard_batch_size_count (\S+)$", text, re.M)
    if not (total and count):
        return (0.0, 0.0)
    return float(total.group(1)), float(count.group(1))


# --------------------------------------------------------------------------- main

HTTP_COLUMNS = ["backend", "workers", "shape", "run", "purchases/s", "baseline/s", "ratio",
                "p50 ms", "p99 ms", "base p50", "base p99", "batch", "cpu ms", "base cpu ms"]
INSTANCE_COLUMNS = ["backend", "shape", "instances", "purchases/s", "one instance/s", "ratio",
                    "p50 ms", "p99 ms", "one p50", "cpu ms", "one cpu ms"]
SERVICE_COLUMNS = ["backend", "shape", "purchases/s", "bare debits/s", "ratio", "p50 ms",
                   "p99 ms", "bare p50 ms"]


async def bench_backend(backend: str, args: argparse.Namespace
                        ) -> tuple[list[list[object]], list[list[object]], list[list[object]]]:
    http_rows: list[list[object]] = []
    service_rows: list[list[object]] = []
    instance_rows: list[list[object]] = []
    n, c, rounds, warmup = args.requests, args.concurrency, args.rounds, args.warmup

    async with bench_database(backend) as db:
        settings = db.settings()
        database = open_database(db)
        console.print(f"[dim]{backend}: seeding {c + 1} buyers and a product[/dim]")
        hot = await seed_buyers(database, settings, 1, balance=FUNDS)
        spread = await seed_buyers(database, settings, c, balance=FUNDS)
        # Every measurement draws from one product's stock: a shared product is what real
        # traffic looks like, and it keeps seeding short.
        product = await seed_product(database, settings, price=1,
                                     items=(2 * args.repeat + 4)
                                     * items_needed(n, rounds, warmup))
        if args.service:
            bare_hot = ["bench_bare_hot"]
            bare_spread = [f"bench_bare_{i}" for i in range(c)]
            await seed_bare_accounts(database, bare_hot + bare_spread)
            async with bare_debit(db) as debit:
                def bare(ids: list[str]) -> Op:
                    async def op(i: int) -> None:
                        await debit(ids[i % len(ids)])
                    return op

                for shape, buyers, ids in (("hot", hot, bare_hot),
                                           ("spread", spread, bare_spread)):
                    console.print(f"[dim]{backend}: service {shape}[/dim]")
                    pair = await interleave(
                        service_purchase(database, db, buyers, product), bare(ids),
                        requests=n, concurrency=c, rounds=rounds, warmup=warmup)
                    service_rows.append([backend, shape, pair.subject.rate,
                                         pair.baseline.rate, pair.ratio,
                                         pair.subject.percentile(50),
                                         pair.subject.percentile(99),
                                         pair.baseline.percentile(50)])
        # Free payguard's in-process pool before the servers open their own (PostgreSQL
        # max_connections is shared with everyone's tests).
        await database.dispose()

        base_hot = ["base_hot"]
        base_spread = [f"base_{i}" for i in range(c)]
        console.print(f"[dim]{backend}: starting payguard serve and the baseline app "
                      f"(--workers {args.workers} each)[/dim]")
        async with payguard_server(db, workers=args.workers) as (url, _admin), \
                baseline_server(db, base_hot + base_spread, workers=args.workers) as base_url, \
                http_client(url, c) as client, http_client(base_url, c) as base_client:
            for run in range(1, args.repeat + 1):
                for shape, buyers, wallets in (("hot", hot, base_hot),
                                               ("spread", spread, base_spread)):
                    console.print(f"[dim]{backend}: http {shape} run {run}[/dim]")
                    before = await batch_totals(client)
                    pair = await interleave(
                        http_purchase(client, buyers, product),
                        baseline_purchase(base_client, wallets),
                        requests=n, concurrency=c, rounds=rounds, warmup=warmup,
                        cpu=(server_cpu(url), server_cpu(base_url)))
                    after = await batch_totals(client)
                    batches = after[1] - before[1]
                    mean_batch = (after[0] - before[0]) / batches if batches else float("nan")
                    http_rows.append([
                        backend, args.workers, shape, run, pair.subject.rate,
                        pair.baseline.rate, pair.ratio, pair.subject.percentile(50),
                        pair.subject.percentile(99), pair.baseline.percentile(50),
                        pair.baseline.percentile(99), mean_batch, pair.subject.cpu_ms,
                        pair.baseline.cpu_ms])
                    # Printed as it comes too: a long run that fails later keeps its rows.
                    console.print(" | ".join(f"{v:.2f}" if isinstance(v, float) else str(v)
                                             for v in http_rows[-1]))
            if args.instances > 1 and backend == "postgresql":
                instance_rows.extend(await compare_instances(
                    db, args, url, client, hot, spread, product))
    return http_rows, service_rows, instance_rows


async def compare_instances(db: BenchDb, args: argparse.Namespace, url: str, client: Any,
                            hot: list[Buyer], spread: list[Buyer], product: str
                            ) -> list[list[object]]:
    """The same purchases spread round-robin over ``--instances`` servers on the one
    database, against the first server alone, interleaved: several instances must not
    be slower than one (issue 10: >= 0.8)."""
    n, c = args.requests, args.concurrency
    rows: list[list[object]] = []
    async with contextlib.AsyncExitStack() as stack:
        urls = [url]
        clients = [client]
        for _ in range(args.instances - 1):
            more, _admin = await stack.enter_async_context(payguard_server(db,
                                                                           workers=args.workers))
            urls.append(more)
            clients.append(await stack.enter_async_context(http_client(more, c)))

        def cpu_of_all() -> float:
            return sum(server_cpu(u)() for u in urls)

        for shape, buyers in (("hot", hot), ("spread", spread)):
            console.print(f"[dim]{db.backend}: {args.instances} instances vs 1, {shape}[/dim]")
            ops = [http_purchase(cl, buyers, product) for cl in clients]

            async def many(i: int, ops: list[Op] = ops) -> None:
                await ops[i % len(ops)](i)

            pair = await interleave(many, ops[0], requests=n, concurrency=c,
                                    rounds=args.rounds, warmup=args.warmup,
                                    cpu=(cpu_of_all, server_cpu(url)))
            rows.append([db.backend, shape, args.instances, pair.subject.rate,
                         pair.baseline.rate, pair.ratio, pair.subject.percentile(50),
                         pair.subject.percentile(99), pair.baseline.percentile(50),
                         pair.subject.cpu_ms, pair.baseline.cpu_ms])
            console.print(" | ".join(f"{v:.2f}" if isinstance(v, float) else str(v)
                                     for v in rows[-1]))
    return rows



async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backend", choices=["sqlite", "postgresql", "both"], default="sqlite",
                        help="sqlite (default: needs no service), postgresql, or both")
    parser.add_argument("--requests", type=int, default=256,
                        help="purchases per measurement (split over the rounds)")
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=2,
                        help="alternating subject/baseline rounds")
    parser.add_argument("--warmup", type=int, default=64, help="unmeasured calls per side")
    parser.add_argument("--workers", type=int, default=1,
                        help="worker processes of payguard serve and of the baseline app")
    parser.add_argument("--repeat", type=int, default=1,
                        help="measure each shape this many times (the machine is shared)")
    parser.add_argument("--instances", type=int, default=1,
                        help="also compare N payguard servers on one PostgreSQL with one")
    parser.add_argument("--service", action="store_true",
                        help="also measure the in-process, unbatched service level")
    args = parser.parse_args()
    warn_if_starved(args)
    http_rows: list[list[object]] = []
    service_rows: list[list[object]] = []
    instance_rows: list[list[object]] = []
    for backend in backends(args.backend):
        h, srv, inst = await bench_backend(backend, args)
        http_rows += h
        service_rows += srv
        instance_rows += inst
    table(f"wallet purchases through HTTP, {args.concurrency} concurrent clients, "
          f"{args.requests} per measurement, {args.rounds} interleaved rounds, "
          f"--workers {args.workers} each side; baseline: bench/baseline_app.py",
          HTTP_COLUMNS, http_rows)
    if instance_rows:
        table(f"{args.instances} payguard instances on one PostgreSQL (round-robin) vs one, "
              f"{args.concurrency} clients, --workers {args.workers} each",
              INSTANCE_COLUMNS, instance_rows)
    if service_rows:
        table(f"service level (unbatched, in-process), {args.concurrency} concurrent callers",
              SERVICE_COLUMNS, service_rows)
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
