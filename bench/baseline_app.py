"""The hand-written baseline for bench/wallet.py: what a team would write without payguard.

A minimal FastAPI app on the same uvicorn (uvloop, httptools) with one endpoint,
``POST /purchase {"wallet": id}``, that in one per-request transaction does a conditional
debit and one journal insert::

    UPDATE bench_wallets SET balance = balance - 1 WHERE id = :id AND balance >= 1
        RETURNING balance
    INSERT INTO bench_journal (wallet_id, amount, balance_after, created_at) VALUES (...)

through asyncpg (a pool of 20, synchronous_commit=on, as payguard's engine) or aiosqlite
(8 connections with payguard's PRAGMAs: WAL, synchronous=FULL, busy timeout; writes in
``BEGIN IMMEDIATE``). No idempotency key, no stock item, no double entry, no receipt or
order number. Run by bench/wallet.py as
``uvicorn baseline_app:create_app --factory --app-dir bench`` with BASELINE_DATABASE_URL.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import aiosqlite
import asyncpg
from fastapi import FastAPI
from fastapi.responses import JSONResponse
from pydantic import BaseModel

PG_POOL = 20
SQLITE_POOL = 8
BUSY_TIMEOUT_MS = 5000

SCHEMA = (
    "CREATE TABLE IF NOT EXISTS bench_wallets (id TEXT PRIMARY KEY, "
    "balance BIGINT NOT NULL CHECK (balance >= 0))",
    "CREATE TABLE IF NOT EXISTS bench_journal (id {serial} PRIMARY KEY, "
    "wallet_id TEXT NOT NULL REFERENCES bench_wallets (id), amount BIGINT NOT NULL, "
    "balance_after BIGINT NOT NULL, created_at TEXT NOT NULL)",
)

Debit = Callable[[str], Awaitable[int | None]]


class PurchaseIn(BaseModel):
    wallet: str


def schema(backend: str) -> list[str]:
    serial = "BIGSERIAL" if backend == "postgresql" else "INTEGER"
    return [s.format(serial=serial) for s in SCHEMA]


@asynccontextmanager
async def postgres(url: str) -> AsyncIterator[Debit]:
    pool = await asyncpg.create_pool(url.replace("postgresql://", "postgres://", 1),
                                     min_size=PG_POOL, max_size=PG_POOL,
                                     server_settings={"synchronous_commit": "on"})

    async def debit(wallet: str) -> int | None:
        async with pool.acquire() as conn, conn.transaction():
            balance = await conn.fetchval(
                "UPDATE bench_wallets SET balance = balance - 1 WHERE id = $1 "
                "AND balance >= 1 RETURNING balance", wallet)
            if balance is None:
                return None
            await conn.execute(
                "INSERT INTO bench_journal (wallet_id, amount, balance_after, created_at) "
                "VALUES ($1, -1, $2, $3)", wallet, balance, datetime.now(UTC).isoformat())
            return int(balance)

    try:
        yield debit
    finally:
        await pool.close()


@asynccontextmanager
async def sqlite(url: str) -> AsyncIterator[Debit]:
    path = url.removeprefix("sqlite:///")
    idle: asyncio.Queue[aiosqlite.Connection] = asyncio.Queue()
    opened = []
    for _ in range(SQLITE_POOL):
        conn = await aiosqlite.connect(path, isolation_level=None,
                                       timeout=BUSY_TIMEOUT_MS / 1000)
        for pragma in ("journal_mode=WAL", "synchronous=FULL",
                       f"busy_timeout={BUSY_TIMEOUT_MS}"):
            await conn.execute(f"PRAGMA {pragma}")
        opened.append(conn)
        idle.put_nowait(conn)

    async def debit(wallet: str) -> int | None:
        conn = await idle.get()
        try:
            await conn.execute("BEGIN IMMEDIATE")
            try:
                async with conn.execute(
                    "UPDATE bench_wallets SET balance = balance - 1 WHERE id = ? "
                    "AND balance >= 1 RETURNING balance", (wallet,)) as cur:
                    row = await cur.fetchone()
                if row is None:
                    await conn.execute("ROLLBACK")
                    return None
                await conn.execute(
                    "INSERT INTO bench_journal (wallet_id, amount, balance_after, created_at) "
                    "VALUES (?, -1, ?, ?)", (wallet, row[0], datetime.now(UTC).isoformat()))
                await conn.execute("COMMIT")
                return int(row[0])
            except BaseException:
                if conn.in_transaction:
                    await conn.execute("ROLLBACK")
                raise
        finally:
            idle.put_nowait(conn)

    try:
        yield debit
    finally:
        for conn in opened:
            await conn.close()


def create_app() -> FastAPI:
    url = os.environ["BASELINE_DATABASE_URL"]
    state: dict[str, Any] = {}

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        opener = postgres if url.startswith("postgresql") else sqlite
        async with opener(url) as debit:
            state["debit"] = debit
            yield

    app = FastAPI(lifespan=lifespan)

    @app.post("/purchase", status_code=201)
    async def purchase(body: PurchaseIn) -> Any:
        balance = await state["debit"](body.wallet)
        if balance is None:
            return JSONResponse({"code": "INSUFFICIENT_BALANCE"}, status_code=400)
        return {"wallet": body.wallet, "balance": balance}

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    return app
