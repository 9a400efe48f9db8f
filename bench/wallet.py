"""Wallet purchases per second (issue 2): one hot wallet and spread over many wallets, on
SQLite and PostgreSQL, each next to a bare baseline measured in the same run on the same
database, in interleaved rounds.

    .venv/bin/python bench/wallet.py [--backend sqlite|postgresql|both] [--requests 128]
                                     [--concurrency 64] [--rounds 2] [--workers 1]

Subjects (every purchase: 1 item of a 1-cent product, status 201/completed):
  service   Database.transaction + purchase_with_wallet, in this process: wallet debit,
            revenue credit, two ledger entries, stock counter and item, order number,
            purchase row, receipt number
  http      POST /api/purchases with a fresh Idempotency-Key against a spawned
            `payguard serve` (auth, idempotency claim + stored response, JSON)
Shapes:
  hot       every client buys from the same wallet
  spread    client i buys from wallet i (one wallet per concurrent client)
Baseline (same shape, same concurrency, same database):
  the bare conditional debit `UPDATE accounts SET balance = balance - :a WHERE id = :id
  AND balance >= :a RETURNING balance`, one statement per transaction, through asyncpg
  (20 pooled connections, payguard's pool_size) or aiosqlite (8 connections with payguard's
  PRAGMAs: WAL, synchronous=FULL, busy timeout).
ratio = payguard purchases/s / baseline debits/s (1.0 would mean a purchase costs no more
than its bare balance update).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiosqlite
import asyncpg
from _support import (
    BenchDb,
    Buyer,
    Op,
    Pair,
    backends,
    bench_database,
    console,
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


# --------------------------------------------------------------------------- main

async def bench_backend(backend: str, args: argparse.Namespace) -> list[list[object]]:
    rows: list[list[object]] = []
    n, c, rounds, warmup = args.requests, args.concurrency, args.rounds, args.warmup

    def row(level: str, shape: str, pair: Pair) -> None:
        rows.append([backend, level, shape, pair.subject.rate, pair.baseline.rate, pair.ratio,
                     pair.subject.percentile(50), pair.subject.percentile(99),
                     pair.baseline.percentile(50)])

    async with bench_database(backend) as db:
        settings = db.settings()
        database = open_database(db)
        console.print(f"[dim]{backend}: seeding {c + 1} buyers and a product[/dim]")
        hot = await seed_buyers(database, settings, 1, balance=FUNDS)
        spread = await seed_buyers(database, settings, c, balance=FUNDS)
        # 4 measurements (2 levels x 2 shapes) draw from one product's stock: a shared
        # product is what real traffic looks like, and it keeps seeding short.
        product = await seed_product(database, settings, price=1,
                                     items=4 * items_needed(n, rounds, warmup))
        bare_hot = ["bench_bare_hot"]
        bare_spread = [f"bench_bare_{i}" for i in range(c)]
        await seed_bare_accounts(database, bare_hot + bare_spread)

        async with bare_debit(db) as debit:
            def bare(ids: list[str]) -> Op:
                async def op(i: int) -> None:
                    await debit(ids[i % len(ids)])
                return op

            for shape, buyers, ids in (("hot", hot, bare_hot), ("spread", spread, bare_spread)):
                console.print(f"[dim]{backend}: service {shape}[/dim]")
                row("service", shape, await interleave(
                    service_purchase(database, db, buyers, product), bare(ids),
                    requests=n, concurrency=c, rounds=rounds, warmup=warmup))
            # Free payguard's in-process pool before the server opens its own (PostgreSQL
            # max_connections is shared with everyone's tests).
            await database.dispose()

            console.print(f"[dim]{backend}: starting payguard serve[/dim]")
            async with payguard_server(db, workers=args.workers) as (url, _admin), \
                    http_client(url, c) as client:
                for shape, buyers, ids in (("hot", hot, bare_hot),
                                           ("spread", spread, bare_spread)):
                    console.print(f"[dim]{backend}: http {shape}[/dim]")
                    row("http", shape, await interleave(
                        http_purchase(client, buyers, product), bare(ids),
                        requests=n, concurrency=c, rounds=rounds, warmup=warmup))
    return rows


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backend", choices=["sqlite", "postgresql", "both"], default="sqlite",
                        help="sqlite (default: needs no service), postgresql, or both")
    parser.add_argument("--requests", type=int, default=128,
                        help="purchases per measurement (split over the rounds)")
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=2,
                        help="alternating subject/baseline rounds")
    parser.add_argument("--warmup", type=int, default=16, help="unmeasured calls per side")
    parser.add_argument("--workers", type=int, default=1, help="payguard serve --workers")
    args = parser.parse_args()
    warn_if_starved(args)
    rows: list[list[object]] = []
    for backend in backends(args.backend):
        rows += await bench_backend(backend, args)
    table(f"wallet purchases, {args.concurrency} concurrent clients, {args.requests} per "
          f"measurement, {args.rounds} interleaved rounds, serve --workers {args.workers}",
          ["backend", "level", "shape", "purchases/s", "bare debits/s", "ratio",
           "p50 ms", "p99 ms", "bare p50 ms"], rows)
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
