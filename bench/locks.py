"""Lock service throughput: acquire+release per second per backend, each next to a bare
baseline measured in the same run on the same machine.

    .venv/bin/python bench/locks.py [--seconds 1.0] [--backends local,sqlite,postgresql,redis]

Per backend, two shapes:
  uncontended   one task, acquire+release of fresh keys in a loop
  contended     64 tasks on one key (every acquisition waits for the previous holder)
Baselines (same shape, same concurrency):
  local         a raw asyncio.Lock
  sql           raw INSERT then DELETE of a row, each its own committed transaction
                (contended: 64 tasks on distinct keys: the transport's best at that
                concurrency, since raw INSERTs on one key would just fail)
  redis         raw SET NX PX then DEL (contended: 64 tasks on distinct keys, as above)
ratio = lock ops/s / baseline ops/s (1.0 = the lock costs nothing over the bare primitive).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

import asyncpg
import redis.asyncio as aioredis
from sqlalchemy import delete, insert

from payguard.config import to_async_url
from payguard.locks import LockService
from payguard.locks.local import LocalBackend
from payguard.locks.redis_backend import RedisBackend
from payguard.locks.sql import SqlBackend
from payguard.store.engine import create_engine
from payguard.store.migrate import migrate
from payguard.store.schema import lock_leases
from payguard.store.uow import Database

CONTENDERS = 64
PG_ADMIN = os.environ.get("PAYGUARD_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("PAYGUARD_BENCH_REDIS", "redis://127.0.0.1:6379/0")


async def rate(op: Callable[[int, int], Awaitable[None]], seconds: float,
               tasks: int = 1) -> float:
    """Ops per second of ``op(task, i)`` run by ``tasks`` concurrent loops for ``seconds``."""
    stop = time.monotonic() + seconds
    counts = [0] * tasks

    async def loop(t: int) -> None:
        i = 0
        while time.monotonic() < stop:
            await op(t, i)
            i += 1
        counts[t] = i

    started = time.monotonic()
    await asyncio.gather(*(loop(t) for t in range(tasks)))
    return sum(counts) / (time.monotonic() - started)


async def measure(name: str, svc: LockService,
                  raw_one: Callable[[int, int], Awaitable[None]],
                  raw_many: Callable[[int, int], Awaitable[None]],
                  seconds: float) -> list[tuple[str, str, float, float]]:
    tag = uuid.uuid4().hex[:6]

    async def uncontended(_t: int, i: int) -> None:
        async with svc.hold(f"u{tag}:{i}", ttl=30, wait=0):
            pass

    async def contended(_t: int, _i: int) -> None:
        async with svc.hold(f"c{tag}", ttl=30, wait=60):
            pass

    rows = []
    base = await rate(raw_one, seconds)
    lock = await rate(uncontended, seconds)
    rows.append((name, "uncontended", lock, base))
    base = await rate(raw_many, seconds, CONTENDERS)
    lock = await rate(contended, seconds, CONTENDERS)
    rows.append((name, f"{CONTENDERS} on one key", lock, base))
    return rows


async def bench_local(seconds: float) -> list[tuple[str, str, float, float]]:
    raw = asyncio.Lock()

    async def raw_lock(_t: int, _i: int) -> None:
        async with raw:
            pass

    svc = LockService(LocalBackend())
    try:
        return await measure("local", svc, raw_lock, raw_lock, seconds)
    finally:
        await svc.close()


async def bench_sql(name: str, url: str, seconds: float) -> list[tuple[str, str, float, float]]:
    await migrate(to_async_url(url))
    database = Database(create_engine(to_async_url(url)))
    tag = uuid.uuid4().hex[:6]

    async def raw(t: int, i: int) -> None:
        key = f"raw{tag}:{t}:{i}"
        async with database.engine.begin() as conn:
            await conn.execute(insert(lock_leases).values(key=key, owner="x", fencing_token=1))
        async with database.engine.begin() as conn:
            await conn.execute(delete(lock_leases).where(lock_leases.c.key == key))

    svc = LockService(SqlBackend(database.engine))
    try:
        return await measure(name, svc, raw, raw, seconds)
    finally:
        await svc.close()
        await database.dispose()


async def bench_redis(seconds: float) -> list[tuple[str, str, float, float]]:
    prefix = f"payguard-bench:{uuid.uuid4().hex[:8]}:"
    client = aioredis.Redis.from_url(REDIS_URL)

    async def raw(t: int, i: int) -> None:
        key = f"{prefix}raw:{t}"
        await client.set(key, "owner", nx=True, px=30_000)
        await client.delete(key)

    svc = LockService(RedisBackend(REDIS_URL, prefix=prefix))
    try:
        return await measure("redis", svc, raw, raw, seconds)
    finally:
        await svc.close()
        async for name in client.scan_iter(match=prefix + "*"):
            await client.delete(name)
        await client.aclose()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=1.0)
    parser.add_argument("--backends", default="local,sqlite,postgresql,redis")
    args = parser.parse_args()
    wanted = args.backends.split(",")
    rows: list[tuple[str, str, float, float]] = []
    if "local" in wanted:
        rows += await bench_local(args.seconds)
    if "sqlite" in wanted:
        with tempfile.TemporaryDirectory() as tmp:
            rows += await bench_sql("sql/sqlite", f"sqlite:///{Path(tmp) / 'b.db'}",
                                    args.seconds)
    if "postgresql" in wanted:
        db = f"payguard_bench_{uuid.uuid4().hex[:8]}"
        admin = await asyncpg.connect(PG_ADMIN)
        await admin.execute(f'CREATE DATABASE "{db}"')
        try:
            rows += await bench_sql("sql/postgresql", PG_ADMIN.rsplit("/", 1)[0] + "/" + db,
                                    args.seconds)
        finally:
            await admin.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
            await admin.close()
    if "redis" in wanted:
        rows += await bench_redis(args.seconds)
    print(f"{'backend':16} {'shape':16} {'lock ops/s':>11} {'baseline/s':>11} {'ratio':>6}")
    for name, shape, lock, base in rows:
        print(f"{name:16} {shape:16} {lock:11.0f} {base:11.0f} {lock / base:6.2f}")


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
