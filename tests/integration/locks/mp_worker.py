"""One OS process of the multi-process mutual-exclusion test (see test_multiprocess.py).

Runs ``tasks`` coroutines that each, under the lock, read a counter file, sleep, and write it
back incremented together with their fencing token. Without exclusion, increments are lost;
a token not larger than the last one written means two holders overlapped.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path

from payguard.config import to_async_url
from payguard.locks import LockService
from payguard.locks.redis_backend import RedisBackend
from payguard.locks.sql import SqlBackend
from payguard.store.engine import create_engine
from payguard.store.uow import Database


def _read(path: Path) -> tuple[int, int]:
    value, last_token = path.read_text().split()
    return int(value), int(last_token)


async def main(cfg: dict[str, object]) -> dict[str, int]:
    database = None
    if cfg["kind"] == "redis":
        svc = LockService(RedisBackend(str(cfg["redis_url"]), prefix=str(cfg["prefix"])))
    else:
        # A small pool: the shared PostgreSQL has a connection limit and 4 of us run at once.
        database = Database(create_engine(to_async_url(str(cfg["db_url"])), pool_size=4))
        svc = LockService(SqlBackend(database.engine))
    counter = Path(str(cfg["counter"]))
    overlaps = 0

    async def increment() -> None:
        nonlocal overlaps
        async with svc.hold("shared-counter", ttl=30, wait=120) as lease:
            value, last_token = await asyncio.to_thread(_read, counter)
            await asyncio.sleep(0.002)
            if lease.fencing_token <= last_token:
                overlaps += 1
            await asyncio.to_thread(counter.write_text, f"{value + 1} {lease.fencing_token}")

    started = time.monotonic()
    try:
        await asyncio.gather(*(increment() for _ in range(int(str(cfg["tasks"])))))
    finally:
        await svc.close()
        if database is not None:
            await database.dispose()
    return {"acquired": svc.counters.acquired_total, "overlaps": overlaps,
            "elapsed_ms": round((time.monotonic() - started) * 1000)}


def wait_for_go(cfg: dict[str, object]) -> None:
    """Start together with the other processes (after the slow imports), so they contend."""
    workdir = Path(str(cfg["workdir"]))
    (workdir / f"ready-{cfg['index']}").touch()
    while not (workdir / "go").exists():
        time.sleep(0.01)


if __name__ == "__main__":
    config = json.loads(sys.argv[1])
    wait_for_go(config)
    print(json.dumps(asyncio.run(main(config))))
