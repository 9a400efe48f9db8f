"""Redis backend specifics: waiting without polling, TTL 0, namespacing, Redis down."""

from __future__ import annotations

import asyncio

import pytest
import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from payguard.api.problems import http_status
from payguard.errors import LockTimeout
from payguard.locks import LockBackendUnavailable, LockService
from payguard.locks.redis_backend import _EXTEND, RedisBackend


async def test_a_waiter_wakes_on_release_without_polling(
        redis_url: str, redis_prefix: str, monkeypatch: pytest.MonkeyPatch) -> None:
    holder = LockService(RedisBackend(redis_url, prefix=redis_prefix))
    waiter_backend = RedisBackend(redis_url, prefix=redis_prefix)
    waiter = LockService(waiter_backend)
    attempts = 0
    real_try = waiter_backend.try_acquire

    async def counting_try(*args: object) -> object:
        nonlocal attempts
        attempts += 1
        return await real_try(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(waiter_backend, "try_acquire", counting_try)
    try:
        lease = await holder.acquire("k", ttl=30, wait=0)
        task = asyncio.create_task(waiter.acquire("k", ttl=30, wait=10))
        await asyncio.sleep(0.5)
        assert attempts == 2  # the first try, then one after subscribing; then it sleeps
        await lease.release()
        second = await task
        assert attempts == 3  # woken by the release message, not by a timer
        assert second.fencing_token == lease.fencing_token + 1
        await second.release()
    finally:
        await holder.close()
        await waiter.close()


async def test_a_lapsed_lease_wakes_the_waiter_at_its_expiry(
        redis_url: str, redis_prefix: str) -> None:
    svc = LockService(RedisBackend(redis_url, prefix=redis_prefix))
    try:
        old = await svc.acquire("k", ttl=0.3, wait=0)  # never released: lapses silently
        new = await svc.acquire("k", ttl=30, wait=5)
        assert new.fencing_token == old.fencing_token + 1 and old.lost
        await new.release()
    finally:
        await svc.close()


async def test_ttl_zero_is_refused_by_the_service_and_by_the_script(
        redis_url: str, redis_prefix: str) -> None:
    backend = RedisBackend(redis_url, prefix=redis_prefix)
    svc = LockService(backend)
    client = aioredis.Redis.from_url(redis_url, decode_responses=True)
    try:
        async with svc.hold("k", ttl=30, wait=0) as lease:
            with pytest.raises(ValueError):
                await lease.extend(ttl=0)
            with pytest.raises(ValueError):
                await backend.extend("k", lease.owner, 0)
            # Even a raw call of the script cannot turn the lease into a PEXPIRE 0 delete.
            with pytest.raises(ResponseError, match="ttl must be positive"):
                await client.eval(_EXTEND, 1, f"{redis_prefix}lock:k", lease.owner, 0)
            assert await client.get(f"{redis_prefix}lock:k") == lease.owner
            assert await client.pttl(f"{redis_prefix}lock:k") > 0
    finally:
        await client.aclose()
        await svc.close()


async def test_keys_are_namespaced_and_the_fence_outlives_the_lease(
        redis_url: str, redis_prefix: str) -> None:
    svc = LockService(RedisBackend(redis_url, prefix=redis_prefix))
    client = aioredis.Redis.from_url(redis_url, decode_responses=True)
    try:
        async with svc.hold("a:b", ttl=30, wait=0) as lease:
            names = sorted([n async for n in client.scan_iter(match=redis_prefix + "*")])
            assert names == [f"{redis_prefix}fence:a:b", f"{redis_prefix}lock:a:b"]
        assert await client.get(f"{redis_prefix}lock:a:b") is None
        assert int(await client.get(f"{redis_prefix}fence:a:b")) == lease.fencing_token
    finally:
        await client.aclose()
        await svc.close()


async def test_redis_down_is_a_fast_clear_error(redis_prefix: str) -> None:
    # Nothing listens on port 1: connection refused, as when Redis is stopped.
    svc = LockService(RedisBackend("redis://127.0.0.1:1/0", prefix=redis_prefix))
    try:
        with pytest.raises(LockBackendUnavailable, match=r"Redis lock backend at 127\.0\.0\.1:1"
                           ) as info:
            async with svc.hold("k", wait=0):
                pass
        # An outage, not a held key: no LockTimeout, but the contract's 503 LOCK_TIMEOUT
        # with a Retry-After at the API.
        assert not isinstance(info.value, LockTimeout)
        assert info.value.code == "LOCK_TIMEOUT"
        assert http_status(info.value) == 503 and info.value.retry_after == 2
        stats = await svc.stats()
        assert stats["health"] == "down" and stats["held"] == []
        assert stats["acquired_total"] == 0
    finally:
        await svc.close()


class _Proxy:
    """A TCP pass-through to Redis that the test can cut, as when Redis goes down."""

    def __init__(self, target_port: int) -> None:
        self._target_port = target_port
        self._writers: list[asyncio.StreamWriter] = []
        self._server: asyncio.Server | None = None
        self.port = 0

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self._target_port)
        self._writers += [writer, up_writer]

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    async def cut(self) -> None:
        assert self._server is not None
        self._server.close()
        for writer in self._writers:
            writer.close()
        await self._server.wait_closed()


async def test_redis_going_down_mid_hold_marks_the_lease_lost(
        redis_url: str, redis_prefix: str, caplog: pytest.LogCaptureFixture) -> None:
    from urllib.parse import urlsplit

    proxy = _Proxy(urlsplit(redis_url).port or 6379)
    await proxy.start()
    svc = LockService(RedisBackend(f"redis://127.0.0.1:{proxy.port}/0", prefix=redis_prefix))
    try:
        async with svc.hold("k", ttl=0.3, wait=0, auto_renew=True) as lease:
            await proxy.cut()
            await asyncio.sleep(0.4)  # the renewal at ~0.1 s fails; the lease runs out
            assert lease.lost
            assert lease.renewals == 0
        # Leaving the block did not raise: the release failure is logged, not masking.
        assert "releasing lease on 'k' failed" in caplog.text
        assert (await svc.stats())["health"] == "down"
        with pytest.raises(LockBackendUnavailable):
            await svc.acquire("k", wait=0)
    finally:
        await svc.close()
