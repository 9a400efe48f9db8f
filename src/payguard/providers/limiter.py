"""Bounded concurrency for outbound provider calls, with a bounded waiting room.

At most ``concurrency`` calls run; up to ``queue`` more wait for a slot. A call that finds
the waiting room full fails *at once* with :class:`ProviderUnavailable`: under overload a
fast 503 the client can retry beats a pile of requests that all time out together.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from payguard.errors import ProviderUnavailable
from payguard.telemetry import NO_METRICS, MetricsSink

__all__ = ["LATENCY_BUCKETS", "CallLimiter", "ProviderStats"]

#: Upper bounds (seconds) of the latency histogram, Prometheus-style (cumulative on export).
LATENCY_BUCKETS: tuple[float, ...] = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


@dataclass
class ProviderStats:
    """Counters for /metrics. Mutated only from the event loop, so no lock is needed."""

    calls_total: int = 0
    errors_total: int = 0
    rejected_total: int = 0  # refused because the waiting room was full
    timeouts_total: int = 0
    in_flight: int = 0
    queued: int = 0
    latency_seconds_sum: float = 0.0
    latency_seconds_count: int = 0
    latency_seconds_max: float = 0.0
    #: Non-cumulative counts per bucket of LATENCY_BUCKETS, plus one overflow bucket.
    latency_buckets: list[int] = field(default_factory=lambda: [0] * (len(LATENCY_BUCKETS) + 1))

    def observe(self, seconds: float) -> None:
        self.latency_seconds_sum += seconds
        self.latency_seconds_count += 1
        self.latency_seconds_max = max(self.latency_seconds_max, seconds)
        for i, bound in enumerate(LATENCY_BUCKETS):
            if seconds <= bound:
                self.latency_buckets[i] += 1
                return
        self.latency_buckets[-1] += 1

    def snapshot(self) -> dict[str, float | int]:
        count = self.latency_seconds_count
        avg = self.latency_seconds_sum / count if count else 0.0
        return {
            "calls_total": self.calls_total,
            "errors_total": self.errors_total,
            "rejected_total": self.rejected_total,
            "timeouts_total": self.timeouts_total,
            "in_flight": self.in_flight,
            "queued": self.queued,
            "latency_seconds_sum": self.latency_seconds_sum,
            "latency_seconds_count": self.latency_seconds_count,
            "latency_seconds_max": self.latency_seconds_max,
            "latency_seconds_avg": avg,
        }


class CallLimiter:
    """``async with limiter.slot():`` around each provider call."""

    def __init__(self, concurrency: int, queue: int, stats: ProviderStats | None = None, *,
                 metrics: MetricsSink = NO_METRICS) -> None:
        if concurrency < 1 or queue < 0:
            raise ValueError("concurrency must be >= 1 and queue >= 0")
        self.concurrency = concurrency
        self.queue = queue
        self.stats = stats or ProviderStats()
        self.metrics = metrics
        self._sem = asyncio.Semaphore(concurrency)

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        stats = self.stats
        if stats.in_flight >= self.concurrency and stats.queued >= self.queue:
            stats.rejected_total += 1
            self.metrics.provider_rejected()
            raise ProviderUnavailable(
                f"payment provider queue is full ({self.concurrency} in flight, "
                f"{self.queue} waiting)"
            )
        stats.queued += 1
        self._report()
        try:
            await self._sem.acquire()
        finally:
            stats.queued -= 1
        stats.in_flight += 1
        self._report()
        started = time.perf_counter()
        try:
            yield
        finally:
            stats.observe(time.perf_counter() - started)
            stats.in_flight -= 1
            self._sem.release()
            self._report()

    def _report(self) -> None:
        self.metrics.provider_load(self.stats.in_flight, self.stats.queued)
