"""The local (asyncio) backend through LockService: fairness, timeouts, expiry, owners."""

from __future__ import annotations

import asyncio
import gc
import sys
import time

import pytest

from payguard.api.problems import http_status
from payguard.errors import LockNotOwned, LockTimeout
from payguard.locks import LockService
from payguard.locks.local import LocalBackend


@pytest.fixture
async def svc() -> LockService:
    service = LockService(LocalBackend())
    yield service  # type: ignore[misc]
    await service.close()


async def test_waiters_are_served_in_arrival_order_and_newcomers_cannot_barge(
        svc: LockService) -> None:
    order: list[int] = []
    first = await svc.acquire("k", ttl=10, wait=0)

    async def waiter(i: int) -> None:
        async with svc.hold("k", ttl=10, wait=5):
            order.append(i)
            await asyncio.sleep(0)

    tasks = []
    for i in range(10):
        tasks.append(asyncio.create_task(waiter(i)))
        await asyncio.sleep(0)  # let task i enqueue before task i+1 starts
    # A try-lock while others queue fails even though it arrives "between" hand-offs.
    with pytest.raises(LockTimeout):
        await svc.acquire("k", ttl=10, wait=0)
    await first.release()
    await asyncio.gather(*tasks)
    assert order == list(range(10))
    assert svc.impl.key_count() == 0  # type: ignore[attr-defined]


async def test_try_lock_and_timed_wait_raise_lock_timeout_and_leave_nothing_behind(
        svc: LockService) -> None:
    async with svc.hold("k", ttl=10, wait=0):
        with pytest.raises(LockTimeout):
            await svc.acquire("k", wait=0)
        with pytest.raises(LockTimeout) as info:
            await svc.acquire("k", wait=0.05)
        assert info.value.code == "LOCK_TIMEOUT" and http_status(info.value) == 503
        assert info.value.retry_after == 1
    assert svc.impl.key_count() == 0  # type: ignore[attr-defined]
    assert svc.counters.timeouts_total == 2


async def test_expiry_hands_the_key_to_a_waiter_and_the_old_holder_is_refused(
        svc: LockService) -> None:
    old = await svc.acquire("k", ttl=0.05, wait=0)
    assert not old.lost
    new = await svc.acquire("k", ttl=10, wait=2)  # granted when the old lease lapses
    assert new.fencing_token > old.fencing_token
    assert old.lost and not new.lost
    with pytest.raises(LockNotOwned):
        await old.extend()
    with pytest.raises(LockNotOwned):
        await old.release()
    # A stranger cannot release or extend the new holder's lease.
    assert await svc.impl.release("k", "not-the-owner") is False
    assert await svc.impl.extend("k", "not-the-owner", 1000) is None
    await new.extend(ttl=20)
    await new.release()
    assert svc.impl.key_count() == 0  # type: ignore[attr-defined]


async def test_release_on_exception_and_on_cancellation(svc: LockService) -> None:
    with pytest.raises(RuntimeError):
        async with svc.hold("k", ttl=10, wait=0):
            raise RuntimeError("boom")
    holder_inside = asyncio.Event()

    async def holder() -> None:
        async with svc.hold("k", ttl=10, wait=0):
            holder_inside.set()
            await asyncio.sleep(60)

    task = asyncio.create_task(holder())
    await holder_inside.wait()
    waiter = asyncio.create_task(svc.acquire("k", wait=60))
    await asyncio.sleep(0.01)
    waiter.cancel()  # a cancelled waiter leaves the queue
    task.cancel()
    for t in (task, waiter):
        with pytest.raises(asyncio.CancelledError):
            await t
    await asyncio.sleep(0)  # the shielded release completes
    assert svc.impl.key_count() == 0  # type: ignore[attr-defined]
    async with svc.hold("k", wait=0):
        pass


async def test_mutual_exclusion_of_read_sleep_write_in_one_process(svc: LockService) -> None:
    shared = {"value": 0}
    tokens: list[int] = []

    async def increment() -> None:
        async with svc.hold("counter", ttl=10, wait=30) as lease:
            value = shared["value"]
            await asyncio.sleep(0.001)
            shared["value"] = value + 1
            tokens.append(lease.fencing_token)

    await asyncio.gather(*(increment() for _ in range(100)))
    assert shared["value"] == 100
    assert tokens == sorted(tokens) and len(set(tokens)) == 100


async def test_statistics_add_up(svc: LockService) -> None:
    lease = await svc.acquire("a", ttl=10, wait=0)
    started = time.monotonic()
    waiter = asyncio.create_task(svc.acquire("a", ttl=10, wait=5))
    await asyncio.sleep(0.03)
    stats = await svc.stats()
    assert stats["backend"] == "local" and stats["health"] == "ok"
    assert stats["active"] == 1
    assert stats["held"][0]["key"] == "a"
    assert stats["held"][0]["fencing_token"] == lease.fencing_token
    assert stats["held"][0]["expires_at"].endswith("Z")
    await lease.release()
    second = await waiter
    waited_ms = (time.monotonic() - started) * 1000
    with pytest.raises(LockTimeout):
        await svc.acquire("a", wait=0)
    await second.release()
    stats = await svc.stats()
    assert set(stats) == {"backend", "active", "acquired_total", "timeouts_total",
                          "avg_wait_ms", "max_wait_ms", "health", "held"}
    assert (stats["active"], stats["acquired_total"], stats["timeouts_total"]) == (0, 2, 1)
    assert stats["held"] == []
    # The waiter waited from its first attempt until the release: more than nothing, no
    # longer than we watched (a lower bound would depend on when a loaded machine first
    # runs the task).
    assert 0 < stats["max_wait_ms"] <= waited_ms + 1
    assert stats["avg_wait_ms"] == pytest.approx(stats["max_wait_ms"] / 2, abs=1)
    assert svc.counters.released_total == 2 and svc.counters.active == 0


async def test_auto_renewal_keeps_the_lease_until_its_cap(svc: LockService) -> None:
    async with svc.hold("r", ttl=0.1, wait=0, auto_renew=True) as lease:
        await asyncio.sleep(0.25)
        assert not lease.lost
        assert lease.renewals >= 2
    async with svc.hold("r", ttl=0.1, wait=0, auto_renew=True, max_renewals=1) as lease:
        await asyncio.sleep(0.3)  # one renewal at ~33 ms buys until ~133 ms
        assert lease.lost
        assert lease.renewals == 1


async def test_invalid_ttl_and_wait_are_refused(svc: LockService) -> None:
    for ttl in (0, -1.0, float("nan")):
        with pytest.raises(ValueError):
            await svc.acquire("k", ttl=ttl)
    with pytest.raises(ValueError):
        await svc.acquire("k", wait=-1)
    async with svc.hold("k") as lease:
        with pytest.raises(ValueError):
            await lease.extend(ttl=0)


async def test_memory_does_not_grow_after_100k_distinct_keys(svc: LockService) -> None:
    backend = svc.impl

    async def churn(start: int, count: int) -> None:
        async def one(i: int) -> None:
            async with svc.hold(f"key-{i}", ttl=30, wait=0):
                pass
        for batch in range(start, start + count, 1000):
            await asyncio.gather(*(one(i) for i in range(batch, batch + 1000)))
        for _ in range(3):
            await asyncio.sleep(0)  # let the last batch's task callbacks run

    await churn(0, 2000)  # warm up allocator pools and caches
    gc.collect()
    # Allocated blocks count every live object, strings included (gc.get_objects would
    # miss a leaked str key); tracemalloc gives the same answer at five times the run time.
    blocks_before = sys.getallocatedblocks()
    objects_before = len(gc.get_objects())
    await churn(10_000, 100_000)
    gc.collect()
    blocks_grown = sys.getallocatedblocks() - blocks_before
    objects_grown = len(gc.get_objects()) - objects_before
    assert backend.key_count() == 0  # type: ignore[attr-defined]
    assert svc.counters.acquired_total == 102_000
    # One leaked key costs at least one block (its str) and an entry: 100k keys would
    # show as >= 100k blocks; allow only allocator noise.
    assert blocks_grown < 1000, f"{blocks_grown} blocks still allocated"
    assert objects_grown < 100, f"{objects_grown} more gc-tracked objects"
