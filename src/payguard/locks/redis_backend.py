"""Redis lock backend: ``SET NX PX`` with a random owner token, Lua compare-and-release and
compare-and-extend, an ``INCR`` fencing counter per key, and waiting without polling.

Keys (``prefix`` is configurable so deployments and test runs never collide)::

    {prefix}lock:{key}     the lease; value = owner token; expires with the lease
    {prefix}fence:{key}    the fencing counter; never expires, so tokens only grow
    {prefix}epoch          the fencing epoch (from the database) of this Redis dataset's life
    {prefix}released       pub/sub channel; a release publishes the key

Expiry times are Redis's own (``PEXPIRETIME``, Redis >= 7.0), never the client's clock.

Waiters register with one shared subscriber before they try, so a release that lands
between a failed try and the wait is never missed. Each release wakes the oldest local
waiter for that key (a waiter that gives up after being woken passes the wake on). A lease
that lapses publishes nothing, so a waiter also wakes when the holder's PTTL runs out, and at
least every ``_SAFETY_WAKE`` seconds because pub/sub delivery is at-most-once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from typing import Any
from urllib.parse import urlsplit

import redis.asyncio as aioredis
from redis.asyncio.client import PubSub
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.retry import Retry

from payguard.locks.epochs import EpochSource, compose
from payguard.locks.errors import LockBackendUnavailable
from payguard.locks.types import Grant, HeldLock

__all__ = ["RedisBackend"]

log = logging.getLogger("payguard.locks")

_SAFETY_WAKE = 1.0
_DOWN = (RedisConnectionError, RedisTimeoutError, OSError)

# KEYS: lock, fence, epoch. ARGV: owner, ttl_ms, use_epoch.
# -> {token, expires_at_ms, epoch} or {0, pttl_ms} or {-1, 0} (no epoch yet: Redis lost its
# state or is new; the caller takes one from the database and tries again).
_ACQUIRE = """
local epoch = '0'
if ARGV[3] == '1' then
  epoch = redis.call('GET', KEYS[3])
  if not epoch then
    return {-1, 0}
  end
end
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  local token = redis.call('INCR', KEYS[2])
  return {token, redis.call('PEXPIRETIME', KEYS[1]), epoch}
end
return {0, redis.call('PTTL', KEYS[1])}
"""

# KEYS: lock. ARGV: owner, channel, key. -> 1 released, 0 not the owner
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
  redis.call('PUBLISH', ARGV[2], ARGV[3])
  return 1
end
return 0
"""

# KEYS: lock. ARGV: owner, ttl_ms. -> new expires_at_ms, or 0 when not the owner.
# PEXPIRE 0 would delete the key: a non-positive TTL is refused here too.
_EXTEND = """
if tonumber(ARGV[2]) <= 0 then
  return redis.error_reply('ttl must be positive')
end
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return redis.call('PEXPIRETIME', KEYS[1])
end
return 0
"""


def _glob_escape(text: str) -> str:
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)


def _where(url: str) -> str:
    """host:port of a Redis URL, without credentials, for error messages."""
    parts = urlsplit(url)
    return f"{parts.hostname or '?'}:{parts.port or 6379}"


class _ReleaseListener:
    """One subscription per backend; routes release messages to local waiters by key."""

    def __init__(self, client: aioredis.Redis, channel: str) -> None:
        self._client = client
        self._channel = channel
        self._pubsub: PubSub | None = None
        self._task: asyncio.Task[None] | None = None
        self._start_lock = asyncio.Lock()
        self._waiters: dict[str, deque[asyncio.Future[None]]] = {}

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    async def ensure_started(self) -> None:
        if self.running:
            return
        async with self._start_lock:
            if self.running:
                return
            await self._stop()
            pubsub = self._client.pubsub()
            self._pubsub = pubsub
            await pubsub.subscribe(self._channel)
            # Only once Redis confirms the subscription is a release guaranteed to reach us.
            while True:
                msg = await pubsub.get_message(timeout=5.0)
                if msg is None:
                    raise RedisTimeoutError("no subscribe confirmation from Redis")
                if msg["type"] == "subscribe":
                    break
            self._task = asyncio.create_task(self._run(pubsub), name="payguard-lock-listener")

    async def _run(self, pubsub: PubSub) -> None:
        while True:
            try:
                msg = await pubsub.get_message(timeout=None)
            except _DOWN as exc:
                # The waiters' own timeouts still bound their waits; restart on next wait.
                log.warning("lock release listener lost Redis: %s", exc)
                return
            if msg is not None and msg["type"] == "message":
                self.notify(msg["data"])

    def register(self, key: str) -> asyncio.Future[None]:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(key, deque()).append(future)
        return future

    def unregister(self, key: str, future: asyncio.Future[None]) -> None:
        queue = self._waiters.get(key)
        if queue is None:
            return
        with contextlib.suppress(ValueError):
            queue.remove(future)
        if not queue:
            del self._waiters[key]

    def notify(self, key: str) -> None:
        """Wake the oldest live waiter for ``key``."""
        queue = self._waiters.get(key)
        while queue:
            future = queue.popleft()
            if not future.done():
                future.set_result(None)
                break
        if queue is not None and not queue:
            del self._waiters[key]

    async def _stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, *_DOWN):
                await self._task
            self._task = None
        if self._pubsub is not None:
            with contextlib.suppress(*_DOWN):
                await self._pubsub.aclose()  # type: ignore[no-untyped-call]
            self._pubsub = None

    async def close(self) -> None:
        await self._stop()
        for queue in self._waiters.values():
            for future in queue:
                future.cancel()
        self._waiters.clear()


class RedisBackend:
    """Leases in Redis (one key per lock, Lua scripts for acquire, extend and release),
    with waiters woken by pub/sub on release: exclusion across every process that uses
    the same Redis and key ``prefix``."""

    name = "redis"

    def __init__(self, url: str, *, prefix: str = "payguard:locks:",
                 connect_timeout: float = 3.0, socket_timeout: float = 5.0,
                 epoch_source: EpochSource | None = None) -> None:
        self._where = _where(url)
        self._prefix = prefix
        # Redis keeps its fencing counters in memory: with an epoch source, tokens are
        # (epoch << 32) | counter, and a Redis that lost its state gets a new, larger epoch.
        self._epoch_source = epoch_source
        self._epoch_key = f"{prefix}epoch"
        # One quick retry covers a pooled connection that went stale. A stopped Redis
        # (connection refused) fails in milliseconds; an unreachable host within about
        # 2 x connect_timeout. The timeout is not lower because a busy event loop opening
        # many pooled connections at once can take over a second to finish a healthy connect.
        self._client: aioredis.Redis = aioredis.Redis.from_url(
            url, decode_responses=True, socket_connect_timeout=connect_timeout,
            socket_timeout=socket_timeout,
            retry=Retry(ExponentialBackoff(cap=0.05, base=0.01), 1),
        )
        self._acquire = self._client.register_script(_ACQUIRE)
        self._release = self._client.register_script(_RELEASE)
        self._extend = self._client.register_script(_EXTEND)
        self._channel = prefix + "released"
        self._listener = _ReleaseListener(self._client, self._channel)

    def _lock_key(self, key: str) -> str:
        return f"{self._prefix}lock:{key}"

    def _fence_key(self, key: str) -> str:
        return f"{self._prefix}fence:{key}"

    def _down(self, exc: BaseException) -> LockBackendUnavailable:
        return LockBackendUnavailable(f"Redis lock backend at {self._where} is unavailable: {exc}")

    async def _call(self, script: Any, keys: list[str], args: list[Any]) -> Any:
        # Once more after a short pause: after a Redis restart every pooled connection is
        # dead, and the client's own retry can meet a second one.
        for attempt in (1, 2):
            try:
                return await script(keys=keys, args=args)
            except _DOWN as exc:
                if attempt == 2:
                    raise self._down(exc) from exc
                await asyncio.sleep(0.05)
        raise AssertionError("unreachable")

    async def try_acquire(self, key: str, owner: str, ttl_ms: int) -> tuple[Grant | None, int]:
        """One attempt: the grant, or None and the holder's remaining ms."""
        for _ in range(3):
            requested_at = time.monotonic()
            result = await self._call(
                self._acquire, [self._lock_key(key), self._fence_key(key), self._epoch_key],
                [owner, ttl_ms, "1" if self._epoch_source else "0"])
            token, value = int(result[0]), int(result[1])
            if token > 0:
                return Grant(compose(int(result[2]), token), value, requested_at), 0
            if token == 0:
                return None, value
            await self._new_epoch()
        raise self._down(RuntimeError("the fencing epoch keeps vanishing"))

    async def _new_epoch(self) -> None:
        """Redis has no epoch (new, or restarted empty): take one from the database. Only
        the first racer's is kept (NX); all are larger than any epoch used before."""
        assert self._epoch_source is not None
        epoch = await self._epoch_source()
        try:
            if await self._client.set(self._epoch_key, epoch, nx=True):
                log.warning("Redis lock backend at %s starts fencing epoch %d", self._where,
                            epoch)
        except _DOWN as exc:
            raise self._down(exc) from exc

    async def acquire(self, key: str, owner: str, ttl_ms: int, wait: float) -> Grant | None:
        deadline = time.monotonic() + wait
        grant, _ = await self.try_acquire(key, owner, ttl_ms)
        if grant is not None or wait <= 0:
            return grant
        try:
            await self._listener.ensure_started()
        except _DOWN as exc:
            raise self._down(exc) from exc
        while True:
            woken = self._listener.register(key)
            try:
                grant, pttl = await self.try_acquire(key, owner, ttl_ms)
                if grant is not None:
                    return grant
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return None
                # pttl < 0: the key vanished between SET NX and PTTL; try again at once.
                pause = min(remaining, _SAFETY_WAKE, max(pttl, 0) / 1000)
                await asyncio.wait((woken,), timeout=pause)
            except BaseException:
                if woken.done() and not woken.cancelled():
                    self._listener.notify(key)  # pass on a wake we will not use
                raise
            finally:
                self._listener.unregister(key, woken)

    async def release(self, key: str, owner: str) -> bool:
        released = await self._call(
            self._release, [self._lock_key(key)], [owner, self._channel, key])
        return int(released) == 1

    async def extend(self, key: str, owner: str, ttl_ms: int) -> int | None:
        if ttl_ms <= 0:
            raise ValueError("a lease TTL must be positive")
        expires = await self._call(self._extend, [self._lock_key(key)], [owner, ttl_ms])
        return int(expires) or None

    async def held(self) -> list[HeldLock]:
        lock_prefix = self._lock_key("")
        try:
            names = [name async for name in
                     self._client.scan_iter(match=_glob_escape(lock_prefix) + "*", count=500)]
            names = sorted(names)[:1000]
            async with self._client.pipeline(transaction=False) as pipe:
                pipe.get(self._epoch_key)
                for name in names:
                    key = name[len(lock_prefix):]
                    pipe.get(self._fence_key(key))
                    pipe.pexpiretime(name)
                epoch, *values = await pipe.execute()
        except _DOWN as exc:
            raise self._down(exc) from exc
        epoch = int(epoch or 0) if self._epoch_source else 0
        held = []
        for i, name in enumerate(names):
            token, expires_at_ms = values[2 * i], values[2 * i + 1]
            if token is not None and int(expires_at_ms) > 0:  # -2: gone since the scan
                held.append(HeldLock(name[len(lock_prefix):], compose(epoch, int(token)),
                                     int(expires_at_ms)))
        return held

    async def healthy(self) -> bool:
        try:
            return bool(await self._client.ping())
        except _DOWN:
            return False

    async def clean_expired(self) -> int:
        return 0  # Redis expires leases itself

    async def close(self) -> None:
        await self._listener.close()
        await self._client.aclose()
