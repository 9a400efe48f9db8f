"""In-process lock backend: asyncio only, one event loop, fair (FIFO) per key.

A released or lapsed lease is handed straight to the oldest live waiter, so a newcomer can
never barge ahead of someone queued (no starvation) and a try-lock fails while anyone
waits. A key's entry exists only while it is held; when the last holder leaves it is
deleted, so any number of distinct keys leaves nothing behind. Fencing tokens come from one
process-wide counter: monotonic per key without keeping per-key state.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import deque
from dataclasses import dataclass, field

from payguard.locks.epochs import EpochSource, compose
from payguard.locks.types import Grant, HeldLock

__all__ = ["LocalBackend"]


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass(slots=True)
class _Waiter:
    owner: str
    ttl_ms: int
    future: asyncio.Future[Grant]


@dataclass(slots=True)
class _Entry:
    owner: str
    token: int
    expires_at_ms: int
    timer: asyncio.TimerHandle | None = None
    waiters: deque[_Waiter] = field(default_factory=deque)


class LocalBackend:
    """Leases held in this process's memory: exclusion among the tasks of one process
    only (one worker). Tokens carry an epoch from the database, so they still grow after
    a restart."""

    name = "local"
    #: ``release`` has no await inside: the service can skip shielding it (a task per release).
    release_never_suspends = True

    def __init__(self, epoch_source: EpochSource | None = None) -> None:
        self._entries: dict[str, _Entry] = {}
        self._tokens = itertools.count(1)
        # The counter restarts with the process: tokens carry an epoch taken from the
        # database at the first acquisition, so they still grow across restarts.
        self._epoch_source = epoch_source
        self._epoch: int | None = None if epoch_source else 0

    # -- acquisition -------------------------------------------------------------------

    async def acquire(self, key: str, owner: str, ttl_ms: int, wait: float) -> Grant | None:
        if self._epoch is None:
            assert self._epoch_source is not None
            epoch = await self._epoch_source()
            if self._epoch is None:  # a concurrent first acquire may have set it
                self._epoch = epoch
        entry = self._entries.get(key)
        if entry is None:
            entry = _Entry(owner=owner, token=0, expires_at_ms=0)
            self._entries[key] = entry
            return self._grant(key, entry, owner, ttl_ms)
        if wait <= 0:
            return None
        waiter = _Waiter(owner, ttl_ms, asyncio.get_running_loop().create_future())
        entry.waiters.append(waiter)
        try:
            # asyncio.wait never cancels the future itself, so a hand-off that lands at the
            # same instant as the timeout is seen below instead of being lost.
            await asyncio.wait((waiter.future,), timeout=wait)
        except asyncio.CancelledError:
            self._abandon(key, waiter)
            raise
        if waiter.future.done():
            return waiter.future.result()
        self._abandon(key, waiter)
        return None

    def _abandon(self, key: str, waiter: _Waiter) -> None:
        """The waiter gave up (timeout or cancellation): leave the queue, or, if the lock
        was handed over in the meantime, pass it on so it is not stranded."""
        if waiter.future.done() and not waiter.future.cancelled():
            self._release_owned(key, waiter.owner)
            return
        waiter.future.cancel()
        entry = self._entries.get(key)
        if entry is not None:
            try:
                entry.waiters.remove(waiter)
            except ValueError:
                pass

    def _grant(self, key: str, entry: _Entry, owner: str, ttl_ms: int) -> Grant:
        entry.owner = owner
        assert self._epoch is not None
        entry.token = compose(self._epoch, next(self._tokens))
        self._arm(key, entry, ttl_ms)
        return Grant(entry.token, entry.expires_at_ms, time.monotonic())

    def _arm(self, key: str, entry: _Entry, ttl_ms: int) -> None:
        if entry.timer is not None:
            entry.timer.cancel()
        entry.expires_at_ms = _now_ms() + ttl_ms
        entry.timer = asyncio.get_running_loop().call_later(
            ttl_ms / 1000, self._expire, key, entry.owner, entry.token
        )

    def _expire(self, key: str, owner: str, token: int) -> None:
        entry = self._entries.get(key)
        if entry is not None and entry.owner == owner and entry.token == token:
            self._hand_off(key, entry)

    def _hand_off(self, key: str, entry: _Entry) -> None:
        if entry.timer is not None:
            entry.timer.cancel()
            entry.timer = None
        while entry.waiters:
            waiter = entry.waiters.popleft()
            if waiter.future.done():  # abandoned
                continue
            waiter.future.set_result(self._grant(key, entry, waiter.owner, waiter.ttl_ms))
            return
        del self._entries[key]
        if not self._entries:
            # A dict never shrinks its table; a fresh one gives the memory back after a burst.
            self._entries = {}

    def _release_owned(self, key: str, owner: str) -> bool:
        entry = self._entries.get(key)
        if entry is None or entry.owner != owner:
            return False
        self._hand_off(key, entry)
        return True

    # -- the rest of the backend contract ------------------------------------------------

    async def release(self, key: str, owner: str) -> bool:
        return self._release_owned(key, owner)

    async def extend(self, key: str, owner: str, ttl_ms: int) -> int | None:
        if ttl_ms <= 0:
            raise ValueError("a lease TTL must be positive")
        entry = self._entries.get(key)
        if entry is None or entry.owner != owner or entry.expires_at_ms <= _now_ms():
            return None
        self._arm(key, entry, ttl_ms)
        return entry.expires_at_ms

    async def held(self) -> list[HeldLock]:
        return [HeldLock(key, e.token, e.expires_at_ms)
                for key, e in sorted(self._entries.items())]

    async def healthy(self) -> bool:
        return True

    async def clean_expired(self) -> int:
        return 0  # lapsed leases are handed off by their timers

    async def close(self) -> None:
        for entry in self._entries.values():
            if entry.timer is not None:
                entry.timer.cancel()
            for waiter in entry.waiters:
                waiter.future.cancel()
        self._entries = {}

    def key_count(self) -> int:
        """Keys with live state (held); for the memory test and diagnostics."""
        return len(self._entries)
