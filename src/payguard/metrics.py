"""Prometheus metrics: one ``Metrics`` per app, a pure-ASGI request middleware, the scrape.

Where the numbers come from:
- recorded where they happen: HTTP requests (``MetricsMiddleware``), provider calls
  (``InstrumentedProvider`` wraps ``ctx.provider``), webhook events (``webhook_event``,
  called by the webhook service), reconciler runs (``reconcile_run``);
- copied from the plain counters other parts keep (idempotency guard, lock service,
  outbox dispatcher, provider limiter) by ``sync``: each call adds the increase since
  the previous call. It runs before every response is sent, on every scrape and on a
  timer, so a worker's files are current before its client sees the response.

Multi-process (``serve --workers N``): when ``PROMETHEUS_MULTIPROC_DIR`` is set (the CLI
sets a fresh one), prometheus_client keeps values in per-process files and the scrape
merges them with ``MultiProcessCollector``, so any worker answers with the totals of all.
Gauges say how they merge: per-process ones (provider in flight / queued) are summed over
live workers; database-wide ones (outbox backlog, locks held) take the most recent value.
"""

from __future__ import annotations

import os
import time
from collections.abc import Awaitable, Callable
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["CONTENT_TYPE_LATEST", "InstrumentedProvider", "Metrics", "MetricsMiddleware"]

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


def multiprocess_dir() -> str | None:
    return os.environ.get(MULTIPROC_ENV) or os.environ.get(MULTIPROC_ENV.lower())


class Metrics:
    """The metric objects of one app, and the scrape."""

    def __init__(self) -> None:
        self.multiprocess = multiprocess_dir() is not None
        # Multi-process values live in files, merged at scrape time; a private registry
        # per app otherwise, so two apps in one process (tests) never collide.
        self.registry: CollectorRegistry | None = None if self.multiprocess else CollectorRegistry()
        reg = self.registry
        self.requests = Counter("payguard_http_requests", "HTTP requests by route and status",
                                ["method", "route", "status"], registry=reg)
        self.latency = Histogram("payguard_http_request_duration_seconds",
                                 "Time to the response headers, by route",
                                 ["method", "route"], buckets=LATENCY_BUCKETS, registry=reg)
        self.lock_acquired = Counter("payguard_lock_acquired", "Leases taken", registry=reg)
        self.lock_wait = Counter("payguard_lock_wait_seconds",
                                 "Seconds spent waiting for leases that were granted",
                                 registry=reg)
        self.lock_timeouts = Counter("payguard_lock_timeouts",
                                     "Lease requests that gave up waiting", registry=reg)
        self.lock_lost = Counter("payguard_lock_lost",
                                 "Leases that lapsed or were taken over while held",
                                 registry=reg)
        self.locks_held = Gauge("payguard_locks_held", "Leases held right now (backend-wide)",
                                registry=reg, multiprocess_mode="mostrecent")
        self.idempotency = Counter("payguard_idempotency_requests",
                                   "Keyed requests by outcome (replayed, in_progress and "
                                   "mismatched are the conflicts)", ["outcome"], registry=reg)
        self.webhooks = Counter("payguard_webhook_events", "Webhook deliveries by type and "
                                "outcome; outcome=duplicate for repeats", ["type", "outcome"],
                                registry=reg)
        self.reconcile_runs = Counter("payguard_reconciler_runs", "Reconciler runs by result",
                                      ["result"], registry=reg)
        self.reconcile_actions = Counter("payguard_reconciler_actions",
                                         "What reconciler runs did", ["action"], registry=reg)
        self.reconcile_seconds = Histogram("payguard_reconciler_run_duration_seconds",
                                           "Duration of reconciler runs that held the lock",
                                           buckets=LATENCY_BUCKETS, registry=reg)
        self.outbox_messages = Counter("payguard_outbox_messages",
                                       "Outbox delivery attempts by outcome", ["outcome"],
                                       registry=reg)
        self.outbox_backlog = Gauge("payguard_outbox_backlog",
                                    "Messages not yet delivered (database-wide)",
                                    registry=reg, multiprocess_mode="mostrecent")
        self.provider_latency = Histogram("payguard_provider_request_duration_seconds",
                                          "Provider calls, including the wait for a slot",
                                          ["operation"], buckets=LATENCY_BUCKETS, registry=reg)
        self.provider_errors = Counter("payguard_provider_errors",
                                       "Provider calls that failed (ProviderUnavailable)",
                                       ["operation"], registry=reg)
        self.provider_rejected = Counter("payguard_provider_rejected",
                                         "Provider calls refused at once: waiting room full",
                                         registry=reg)
        self.provider_in_flight = Gauge("payguard_provider_in_flight",
                                        "Provider calls running now", registry=reg,
                                        multiprocess_mode="livesum")
        self.gateway_queue = Gauge("payguard_provider_queue_depth",
                                   "Provider calls waiting for a slot (gateway queue depth)",
                                   registry=reg, multiprocess_mode="livesum")
        self._seen: dict[str, float] = {}

    # -- recorded where it happens ---------------------------------------------------------

    def request(self, method: str, route: str, status: int, seconds: float) -> None:
        self.requests.labels(method, route, str(status)).inc()
        self.latency.labels(method, route).observe(seconds)

    def webhook_event(self, event_type: str, outcome: str) -> None:
        self.webhooks.labels(event_type, outcome).inc()

    def reconcile_run(self, result: str, counts: dict[str, int], seconds: float) -> None:
        self.reconcile_runs.labels(result).inc()
        for action, n in counts.items():
            if n:
                self.reconcile_actions.labels(action).inc(n)
        if result != "skipped":
            self.reconcile_seconds.observe(seconds)

    def provider_call(self, operation: str, seconds: float, ok: bool) -> None:
        self.provider_latency.labels(operation).observe(seconds)
        if not ok:
            self.provider_errors.labels(operation).inc()

    def instrument_provider(self, provider: Any) -> Any:
        return InstrumentedProvider(provider, self)

    # -- copied from other parts' counters -------------------------------------------------

    def _add(self, name: str, current: float, inc: Callable[[float], None]) -> None:
        delta = current - self._seen.get(name, 0.0)
        self._seen[name] = current
        if delta > 0:
            inc(delta)

    def sync(self, ctx: Any) -> None:
        """Bring the copied counters and the per-process gauges up to date (no I/O)."""
        guard = getattr(getattr(ctx, "guard", None), "counters", None)
        if guard is not None:
            for outcome in ("claimed", "replayed", "in_progress", "mismatched", "released",
                            "recovered"):
                self._add(f"idem.{outcome}", getattr(guard, outcome),
                          self.idempotency.labels(outcome).inc)
        locks = getattr(getattr(ctx, "locks", None), "counters", None)
        if locks is not None:
            self._add("lock.acquired", locks.acquired_total, self.lock_acquired.inc)
            self._add("lock.wait", locks.wait_seconds_total, self.lock_wait.inc)
            self._add("lock.timeouts", locks.timeouts_total, self.lock_timeouts.inc)
            self._add("lock.lost", locks.lost_total, self.lock_lost.inc)
        outbox = getattr(ctx, "outbox", None)
        if outbox is not None:
            for outcome in ("sent", "failed", "dead"):
                self._add(f"outbox.{outcome}", getattr(outbox, f"{outcome}_total"),
                          self.outbox_messages.labels(outcome).inc)
        stats = getattr(getattr(ctx, "provider", None), "stats", None)
        if stats is not None:
            self._add("provider.rejected", stats.rejected_total, self.provider_rejected.inc)
            self.provider_in_flight.set(stats.in_flight)
            self.gateway_queue.set(stats.queued)

    async def tick(self, ctx: Any) -> None:
        """For a periodic task: background work (outbox, reconciler) shows up promptly."""
        self.sync(ctx)

    async def scrape(self, ctx: Any) -> bytes:
        """The Prometheus text exposition, with the database-wide gauges read now."""
        self.sync(ctx)
        try:
            if ctx.outbox is not None:
                self.outbox_backlog.set(await ctx.outbox.backlog())
        except Exception:  # a scrape must not fail because the database is down
            pass
        try:
            self.locks_held.set((await ctx.locks.stats())["active"])
        except Exception:
            pass
        if self.multiprocess:
            from prometheus_client import multiprocess

            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
            return bytes(generate_latest(registry))
        assert self.registry is not None
        return bytes(generate_latest(self.registry))

    def close(self) -> None:
        """On worker shutdown: drop this process's live gauges from the merged view."""
        if self.multiprocess:
            from prometheus_client import multiprocess

            multiprocess.mark_process_dead(os.getpid())  # type: ignore[no-untyped-call]


class InstrumentedProvider:
    """``ctx.provider`` with each outbound call timed and its failures counted."""

    def __init__(self, inner: Any, metrics: Metrics) -> None:
        self._inner = inner
        self._metrics = metrics

    def __getattr__(self, name: str) -> Any:  # stats, name, construct_event, close, ...
        return getattr(self._inner, name)

    async def _timed(self, operation: str, call: Awaitable[Any]) -> Any:
        started = time.perf_counter()
        ok = False
        try:
            result = await call
            ok = True
            return result
        finally:  # any failure counts, ProviderUnavailable or a bug in the adapter
            self._metrics.provider_call(operation, time.perf_counter() - started, ok)

    async def create_checkout_session(self, **kwargs: Any) -> Any:
        return await self._timed("create_session",
                                 self._inner.create_checkout_session(**kwargs))

    async def retrieve_checkout_session(self, session_id: str) -> Any:
        return await self._timed("retrieve_session",
                                 self._inner.retrieve_checkout_session(session_id))

    async def expire_checkout_session(self, session_id: str, **kwargs: Any) -> Any:
        return await self._timed("expire_session",
                                 self._inner.expire_checkout_session(session_id, **kwargs))

    async def refund(self, **kwargs: Any) -> Any:
        return await self._timed("refund", self._inner.refund(**kwargs))


class MetricsMiddleware:
    """Pure ASGI: counts each HTTP request by route template and status, times it to the
    response headers, and syncs the copied counters before those headers leave."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        root = scope.get("root_path", "")
        recorded = False

        def record(status: int) -> None:
            nonlocal recorded
            recorded = True
            ctx = getattr(getattr(scope.get("app"), "state", None), "ctx", None)
            if ctx is not None:
                self.metrics.sync(ctx)
            self.metrics.request(scope["method"], _route(scope, root), status,
                                 time.perf_counter() - started)

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start" and not recorded:
                record(int(message["status"]))
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        except BaseException:
            if not recorded:
                record(500)
            raise


def _route(scope: Scope, root: str) -> str:
    """The matched route's template (``/api/purchases/{purchase_id}``), never the raw path,
    so ids don't explode the label set; a mounted app's routes get the mount prefix."""
    route = scope.get("route")
    path = getattr(route, "path", None)
    if path is None:
        return "unmatched"
    mount = str(scope.get("root_path", ""))[len(root):]
    return f"{mount}{path}"
