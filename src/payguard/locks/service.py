"""``LockService``: leases with fencing tokens over a pluggable backend.

    async with locks.hold("checkout:u1:p9", ttl=30, wait=2) as lease:
        ...  # write with lease.fencing_token via payguard.locks.fencing.advance_fence

A lease is only a promise until ``expires_at``: a paused holder (GC, swap, a slow provider
call) can outlive it while someone else takes the key. ``lease.lost`` says so as far as this
process can tell, and the fencing token lets the database refuse the late writer for sure.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import secrets
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

from payguard.clock import isoformat
from payguard.errors import LockNotOwned, LockTimeout
from payguard.locks.errors import LockBackendUnavailable
from payguard.locks.stats import LockCounters
from payguard.locks.types import HeldLock, LockBackend
from payguard.telemetry import NO_METRICS, MetricsSink

__all__ = ["Lease", "LockService"]

log = logging.getLogger("payguard.locks")


def _from_ms(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)


def _ttl_ms(ttl: float) -> int:
    if not ttl > 0 or math.isinf(ttl):
        raise ValueError(f"a lease TTL must be a positive number of seconds, got {ttl!r}")
    return max(1, round(ttl * 1000))


class Lease:
    """One holding of one key. Created by ``LockService.hold``; not shared between tasks."""

    def __init__(self, service: LockService, key: str, owner: str, fencing_token: int,
                 expires_at_ms: int, ttl: float, deadline: float) -> None:
        self._service = service
        self.key = key
        self.owner = owner
        self.fencing_token = fencing_token
        self.expires_at = _from_ms(expires_at_ms)
        self.ttl = ttl
        # Local monotonic deadline, measured from *before* the request that set the expiry,
        # so it errs early: we never believe we hold a lease the backend has let go.
        self._deadline = deadline
        self._lost = False
        self._released = False
        self.renewals = 0

    @property
    def lost(self) -> bool:
        """True once the lease lapsed or a renewal was refused; work done now is unprotected."""
        if not self._lost and not self._released and time.monotonic() >= self._deadline:
            self._mark_lost()
        return self._lost

    def _mark_lost(self) -> None:
        if not self._lost:
            self._lost = True
            self._service.counters.lost_total += 1
            self._service.metrics.lock_lost()

    async def extend(self, ttl: float | None = None) -> None:
        """Push the expiry to now + ``ttl`` (default: the original TTL).

        Raises ``LockNotOwned`` (and sets ``lost``) when the lease lapsed or was taken over.
        """
        ttl = self.ttl if ttl is None else ttl
        ttl_ms = _ttl_ms(ttl)
        if self._released:
            raise LockNotOwned(f"lease on {self.key!r} was already released")
        started = time.monotonic()
        expires_at_ms = await self._service.impl.extend(self.key, self.owner, ttl_ms)
        if expires_at_ms is None:
            self._mark_lost()
            raise LockNotOwned(f"lease on {self.key!r} lapsed or belongs to someone else")
        self.expires_at = _from_ms(expires_at_ms)
        self._deadline = started + ttl
        self.ttl = ttl

    async def release(self) -> None:
        """Give the key up. Raises ``LockNotOwned`` if it is no longer ours to give."""
        if self._released:
            return
        self._released = True
        self._service.counters.released()
        if not await self._service.impl.release(self.key, self.owner):
            self._mark_lost()
            raise LockNotOwned(f"lease on {self.key!r} lapsed and was not released by its owner")


class LockService:
    """The lock service of one process; ``backend`` decides how far its exclusion reaches."""

    def __init__(self, backend: LockBackend, *, holder_id: str | None = None,
                 metrics: MetricsSink = NO_METRICS) -> None:
        self._backend = backend
        self.counters = LockCounters()  # this process's totals, for the admin view
        self.metrics = metrics
        # Owner tokens start with the holding process's id (``payguard.holders``), so a
        # lease in the admin view or in Redis says which process holds it.
        self.holder_id = holder_id

    @property
    def backend(self) -> str:
        """``"local"``, ``"sql"`` or ``"redis"``."""
        return self._backend.name

    @property
    def impl(self) -> LockBackend:
        """The backend object itself (diagnostics and tests)."""
        return self._backend

    async def acquire(self, key: str, *, ttl: float = 30.0, wait: float = 2.0) -> Lease:
        """Take ``key`` within ``wait`` seconds (0: try once) or raise ``LockTimeout``.

        Prefer ``hold()``, which always releases; a bare lease must be released by hand.
        """
        if not key:
            raise ValueError("lock key must not be empty")
        if wait < 0 or math.isnan(wait):
            raise ValueError(f"wait must be >= 0 seconds, got {wait!r}")
        ttl_ms = _ttl_ms(ttl)
        owner = (f"{self.holder_id}:{secrets.token_hex(12)}" if self.holder_id
                 else secrets.token_hex(16))
        started = time.monotonic()
        grant = await self._backend.acquire(key, owner, ttl_ms, wait)
        waited = time.monotonic() - started
        if grant is None:
            self.counters.timeouts_total += 1
            self.metrics.lock_timed_out()
            raise LockTimeout(f"lock {key!r} not acquired within {wait:g}s")
        self.counters.acquired(waited)
        self.metrics.lock_acquired(waited)
        return Lease(self, key, owner, grant.fencing_token, grant.expires_at_ms, ttl,
                     deadline=grant.requested_at + ttl)

    @contextlib.asynccontextmanager
    async def hold(self, key: str, ttl: float = 30.0, wait: float = 2.0, *,
                   auto_renew: bool = False, max_renewals: int = 10) -> AsyncIterator[Lease]:
        """Hold ``key`` for the block; released on exit, whatever happens inside.

        ``auto_renew`` extends the lease every ttl/3 seconds, at most ``max_renewals`` times,
        so a runaway block cannot keep a key forever. A lease found lost on exit is not an
        error here (the block already ran); check ``lease.lost`` and rely on fencing.
        """
        lease = await self.acquire(key, ttl=ttl, wait=wait)
        renewer = (asyncio.create_task(self._renew(lease, max_renewals),
                                       name=f"payguard-lock-renew:{key}")
                   if auto_renew else None)
        try:
            yield lease
        finally:
            if renewer is not None:
                renewer.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await renewer
            try:
                if getattr(self._backend, "release_never_suspends", False):
                    # Nothing to interrupt: cancellation only lands at a suspension point.
                    await lease.release()
                else:
                    # Shielded so a cancelled task still gives the key back.
                    await asyncio.shield(lease.release())
            except LockNotOwned:
                log.warning("lease on %r was lost before release (token %d)",
                            key, lease.fencing_token)
            except Exception:
                # Backend down: the lease will lapse by itself; do not mask the block's error.
                log.exception("releasing lease on %r failed", key)

    async def _renew(self, lease: Lease, max_renewals: int) -> None:
        while lease.renewals < max_renewals:
            await asyncio.sleep(lease.ttl / 3)
            try:
                await lease.extend()
            except LockNotOwned:
                return
            except Exception:  # backend down: the lease can no longer be trusted
                log.exception("renewing lease on %r failed", lease.key)
                lease._mark_lost()
                return
            lease.renewals += 1
            self.counters.renewals_total += 1

    async def stats(self) -> dict[str, Any]:
        """The admin view (API.md ``GET /api/admin/locks``).

        ``held`` is what the backend holds (all processes for sql/redis); ``active`` counts
        it. The totals and waits are this process's since start.
        """
        healthy = await self._backend.healthy()
        held: list[HeldLock] = []
        if healthy:
            try:
                held = await self._backend.held()
            except LockBackendUnavailable:  # went down between the two calls
                healthy = False
        c = self.counters
        return {
            "backend": self._backend.name,
            "active": len(held),
            "acquired_total": c.acquired_total,
            "timeouts_total": c.timeouts_total,
            "avg_wait_ms": c.avg_wait_ms,
            "max_wait_ms": c.max_wait_ms,
            "health": "ok" if healthy else "down",
            "held": [
                {"key": h.key, "fencing_token": h.fencing_token,
                 "expires_at": isoformat(_from_ms(h.expires_at_ms))}
                for h in held
            ],
        }

    async def healthy(self) -> bool:
        """Whether the backend answers (always true for the in-process backend)."""
        return await self._backend.healthy()

    async def clean_expired(self) -> int:
        """Clear lapsed leases (housekeeping; a lapsed lease is takeable anyway)."""
        return await self._backend.clean_expired()

    async def close(self) -> None:
        """Release the backend's connections (Redis); the database is not closed."""
        await self._backend.close()
