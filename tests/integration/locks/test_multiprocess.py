"""Mutual exclusion across 4 OS processes x 25 tasks on one SQLite file, one PostgreSQL
database, and one Redis: read-sleep-write of a shared file counter must come out exact."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from tests.integration.locks.conftest import LockTarget, migrated

PROCESSES, TASKS = 4, 25
ROOT = Path(__file__).resolve().parents[3]


async def _migrate(url: str) -> None:
    database = await migrated(url)
    await database.dispose()


def test_four_processes_increment_exactly(lock_target: LockTarget, tmp_path: Path) -> None:
    asyncio.run(_migrate(lock_target.db_url))
    counter = tmp_path / "counter"
    counter.write_text("0 0")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = []
    for index in range(PROCESSES):
        cfg = {"kind": lock_target.kind, "db_url": lock_target.db_url,
               "redis_url": lock_target.redis_url, "prefix": lock_target.redis_prefix,
               "counter": str(counter), "workdir": str(tmp_path), "index": index,
               "tasks": TASKS}
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "tests.integration.locks.mp_worker", json.dumps(cfg)],
            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    try:
        deadline = time.monotonic() + 60
        while len(list(tmp_path.glob("ready-*"))) < PROCESSES:
            assert time.monotonic() < deadline, "workers did not start"
            assert all(p.poll() is None for p in procs), "a worker died while starting"
            time.sleep(0.02)
        (tmp_path / "go").touch()
        results = []
        for proc in procs:
            out, err = proc.communicate(timeout=120)
            assert proc.returncode == 0, err
            results.append(json.loads(out.strip().splitlines()[-1]))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
            proc.communicate()  # reap and close the pipes
    value, last_token = (int(x) for x in counter.read_text().split())
    assert value == PROCESSES * TASKS
    assert [r["acquired"] for r in results] == [TASKS] * PROCESSES
    assert sum(r["overlaps"] for r in results) == 0
    assert last_token >= PROCESSES * TASKS
    print("elapsed ms per process:", [r["elapsed_ms"] for r in results])
