"""The shop's test fixtures: a fresh database (SQLite file, or a new PostgreSQL database)
and real uvicorn servers running the shop on it.

PostgreSQL is taken from ``SHOP_TEST_PG`` (default ``postgresql://postgres@127.0.0.1:5432``);
when it cannot be reached the PostgreSQL half is skipped with the reason, unless
``PAYGUARD_REQUIRE_SERVICES=1`` (CI), where it fails.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

SHOP_DIR = Path(__file__).resolve().parents[1]
# The tests read the shop's own tables (``shop.models``) to check what the servers wrote.
sys.path.insert(0, str(SHOP_DIR))
PG = os.environ.get("SHOP_TEST_PG", "postgresql://postgres@127.0.0.1:5432")
REQUIRE_SERVICES = os.environ.get("PAYGUARD_REQUIRE_SERVICES") == "1"


def _unavailable(reason: str) -> None:
    if REQUIRE_SERVICES:
        pytest.fail(f"PostgreSQL is required (PAYGUARD_REQUIRE_SERVICES=1) but {reason}")
    pytest.skip(f"PostgreSQL not available: {reason}")


async def _pg_admin(sql: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(f"{PG}/postgres", timeout=5)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, empty database for one test."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'shop.db'}"
        return
    name = f"shop_t_{uuid.uuid4().hex[:12]}"
    try:
        asyncio.run(_pg_admin(f'CREATE DATABASE "{name}"'))
    except Exception as exc:
        _unavailable(f"CREATE DATABASE at {PG} failed: {exc!r}")
    try:
        yield f"{PG}/{name}"
    finally:
        asyncio.run(_pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Server:
    """``uvicorn --factory shop.app:app_from_env`` in a process of its own."""

    def __init__(self, database_url: str, log: Path) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        self._log = log.open("wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "--factory", "shop.app:app_from_env",
             "--host", "127.0.0.1", "--port", str(self.port), "--log-level", "warning"],
            cwd=SHOP_DIR, env={**os.environ, "SHOP_DATABASE_URL": database_url},
            stdout=self._log, stderr=subprocess.STDOUT)

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the shop exited: {self.log.read_text()[-2000:]}")
            try:
                if httpx.get(f"{self.url}/openapi.json", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"the shop did not start: {self.log.read_text()[-2000:]}")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self._log.close()


@pytest.fixture
def start_shop(tmp_path: Path) -> Iterator[Callable[[str], Server]]:
    """Start servers on a database, one after the other (each creates missing tables at
    start, so the second finds them made); all are stopped at the end of the test."""
    servers: list[Server] = []

    def start(database_url: str) -> Server:
        server = Server(database_url, tmp_path / f"shop-{len(servers)}.log")
        servers.append(server)
        server.wait_ready()
        return server

    try:
        yield start
    finally:
        for server in servers:
            server.stop()
