"""The same lease semantics on every shared backend (SQL on SQLite/PostgreSQL, Redis)."""

from __future__ import annotations

import asyncio
import time

import pytest

from payguard.errors import LockNotOwned, LockTimeout
from tests.integration.locks.conftest import LockEnv


async def test_try_lock_timeout_and_statistics_add_up(lock_env: LockEnv) -> None:
    a, b = lock_env.service(), lock_env.service()  # two clients, as two processes would be
    async with a.hold("k", ttl=10, wait=0) as lease:
        with pytest.raises(LockTimeout):
            await b.acquire("k", wait=0)
        started = time.monotonic()
        with pytest.raises(LockTimeout):
            await b.acquire("k", wait=0.15)
        assert time.monotonic() - started >= 0.15
        stats = await b.stats()  # the shared view: b sees a's lease
        assert stats["backend"] == lock_env.kind and stats["health"] == "ok"
        assert stats["active"] == 1
        assert [(h["key"], h["fencing_token"]) for h in stats["held"]] == [
            ("k", lease.fencing_token)]
        assert stats["held"][0]["expires_at"] == lease.expires_at.isoformat().replace(
            "+00:00", "Z")
    async with b.hold("k", ttl=10, wait=0):
        pass
    sa, sb = await a.stats(), await b.stats()
    assert (sa["active"], sa["acquired_total"], sa["timeouts_total"]) == (0, 1, 0)
    assert (sb["active"], sb["acquired_total"], sb["timeouts_total"]) == (0, 1, 2)
    assert sa["held"] == sb["held"] == []


async def test_a_waiter_gets_the_key_when_it_is_released(lock_env: LockEnv) -> None:
    a, b = lock_env.service(), lock_env.service()
    lease = await a.acquire("k", ttl=10, wait=0)
    waiter = asyncio.create_task(b.acquire("k", ttl=10, wait=5))
    await asyncio.sleep(0.2)
    assert not waiter.done()
    await lease.release()
    second = await waiter
    assert second.fencing_token == lease.fencing_token + 1
    assert b.counters.wait_seconds_max >= 0.2
    await second.release()


async def test_expiry_then_takeover_and_the_old_owner_is_refused(lock_env: LockEnv) -> None:
    a, b = lock_env.service(), lock_env.service()
    old = await a.acquire("k", ttl=0.2, wait=0)
    new = await b.acquire("k", ttl=10, wait=3)  # only possible once the old lease lapsed
    assert new.fencing_token > old.fencing_token
    assert old.lost and not new.lost
    with pytest.raises(LockNotOwned):
        await old.extend(ttl=10)
    with pytest.raises(LockNotOwned):
        await old.release()
    with pytest.raises(LockTimeout):  # the refused release did not free the key
        await a.acquire("k", wait=0)
    assert await a.impl.release("k", "stranger") is False
    assert await a.impl.extend("k", "stranger", 10_000) is None
    before = new.expires_at
    await new.extend(ttl=20)
    assert new.expires_at > before
    await new.release()
    async with a.hold("k", wait=0) as third:
        assert third.fencing_token > new.fencing_token


async def test_release_on_exception_and_tokens_grow_across_holders(lock_env: LockEnv) -> None:
    svc = lock_env.service()
    tokens = []
    for _ in range(3):
        with pytest.raises(RuntimeError):
            async with svc.hold("k", ttl=10, wait=0) as lease:
                tokens.append(lease.fencing_token)
                raise RuntimeError("boom")
    assert tokens == sorted(tokens) and len(set(tokens)) == 3
    assert (await svc.stats())["active"] == 0


async def test_mutual_exclusion_between_clients_in_one_process(lock_env: LockEnv) -> None:
    services = [lock_env.service() for _ in range(3)]
    shared = {"value": 0}

    async def increment(i: int) -> None:
        async with services[i % 3].hold("counter", ttl=10, wait=30):
            value = shared["value"]
            await asyncio.sleep(0.002)
            shared["value"] = value + 1

    await asyncio.gather(*(increment(i) for i in range(30)))
    assert shared["value"] == 30
    assert sum(s.counters.acquired_total for s in services) == 30
    if lock_env.kind == "sql":  # the per-process waiting gates are gone with their waiters
        assert all(not s.impl._gates for s in services)  # type: ignore[attr-defined]
