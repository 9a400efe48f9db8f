"""Access to the real services tests run against, and the skip-or-fail rule for absent ones.

With ``PAYGUARD_REQUIRE_SERVICES=1`` (set by ``.ci/run``) a missing PostgreSQL or Redis
fails the test instead of skipping it, so CI can never go green by skipping.
"""

from __future__ import annotations

import asyncio
import os
import socket
import uuid
from typing import NoReturn

import pytest

REQUIRE_SERVICES = os.environ.get("PAYGUARD_REQUIRE_SERVICES") == "1"
PG_HOST = os.environ.get("PAYGUARD_TEST_PG_HOST", "127.0.0.1")
PG_PORT = int(os.environ.get("PAYGUARD_TEST_PG_PORT", "5432"))
PG_USER = os.environ.get("PAYGUARD_TEST_PG_USER", "postgres")
REDIS_URL = os.environ.get("PAYGUARD_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


def unavailable(service: str, reason: str) -> NoReturn:
    if REQUIRE_SERVICES:
        pytest.fail(f"{service} is required (PAYGUARD_REQUIRE_SERVICES=1) but {reason}")
    pytest.skip(f"{service} not available: {reason}")


def _port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def pg_admin_dsn(database: str = "postgres") -> str:
    return f"postgresql://{PG_USER}@{PG_HOST}:{PG_PORT}/{database}"


async def _pg_exec(sql: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(pg_admin_dsn(), timeout=5)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


def create_pg_database() -> str:
    """Create a fresh, empty database and return its plain ``postgresql://`` URL."""
    if not _port_open(PG_HOST, PG_PORT):
        unavailable("PostgreSQL", f"nothing listens on {PG_HOST}:{PG_PORT}")
    name = f"payguard_t_{uuid.uuid4().hex[:12]}"
    try:
        asyncio.run(_pg_exec(f'CREATE DATABASE "{name}"'))
    except Exception as exc:
        unavailable("PostgreSQL", f"CREATE DATABASE failed: {exc}")
    return pg_admin_dsn(name)


def drop_pg_database(url: str) -> None:
    name = url.rsplit("/", 1)[1]
    asyncio.run(_pg_exec(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def require_redis() -> str:
    """The test Redis URL, after checking that Redis answers PING."""
    import redis

    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1)
    try:
        client.ping()
    except Exception as exc:
        unavailable("Redis", f"PING to {REDIS_URL} failed: {exc}")
    finally:
        client.close()
    return REDIS_URL
