"""Prometheus metrics: ``Metrics`` (the ``MetricsSink`` of a served app), a pure-ASGI
request middleware, the scrape.

Every number is recorded where it happens: HTTP requests by ``MetricsMiddleware``; the
idempotency guard, lock service, outbox dispatcher, provider adapter, webhook service and
reconciler call the ``payguard.telemetry.MetricsSink`` methods this class implements. The
database-wide gauges (outbox backlog, leases held) are read at scrape time.

Multi-process (``serve --workers N``): when ``PROMETHEUS_MULTIPROC_DIR`` is set (the CLI
sets a fresh one), prometheus_client keeps values in per-process files and the scrape
merges them with ``MultiProcessCollector``, so any worker answers with the totals of all.
Gauges say how they merge: per-process ones (provider in flight / queued) are summed over
live workers; database-wide ones (outbox backlog, locks held) take the most recent value.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from payguard.telemetry import IdempotencyOutcome, MetricsSink, OutboxOutcome

if TYPE_CHECKING:
    from payguard.service.context import AppContext

__all__ = ["CONTENT_TYPE_LATEST", "Metrics", "MetricsMiddleware"]

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096)
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


def multiprocess_dir() -> str | None:
    return os.environ.get(MULTIPROC_ENV) or os.environ.get(MULTIPROC_ENV.lower())


class Metrics(MetricsSink):
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
        self.lock_acquired_total = Counter("payguard_lock_acquired", "Leases taken", registry=reg)
        self.lock_wait = Counter("payguard_lock_wait_seconds",
                                 "Seconds spent waiting for leases that were granted",
                                 registry=reg)
        self.lock_timeouts = Counter("payguard_lock_timeouts",
                                     "Lease requests that gave up waiting", registry=reg)
        self.lock_lost_total = Counter("payguard_lock_lost",
                                 "Leases that lapsed or were taken over while held",
                                 registry=reg)
        self.locks_held = Gauge("payguard_locks_held", "Leases held right now (backend-wide)",
                                registry=reg, multiprocess_mode="mostrecent")
        self.idempotency_requests = Counter("payguard_idempotency_requests",
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
        self.inbox_pending = Gauge("payguard_inbox_pending",
                                   "Webhook events received but not applied yet (database-"
                                   "wide; failed applies wait here for their retry)",
                                   registry=reg, multiprocess_mode="mostrecent")
        self.outbox_backlog = Gauge("payguard_outbox_backlog",
                                    "Messages not yet delivered (database-wide)",
                                    registry=reg, multiprocess_mode="mostrecent")
        self.provider_latency = Histogram("payguard_provider_request_duration_seconds",
                                          "Provider calls, including the wait for a slot",
                                          ["operation"], buckets=LATENCY_BUCKETS, registry=reg)
        self.provider_errors = Counter("payguard_provider_errors",
                                       "Provider calls that failed (ProviderUnavailable)",
                                       ["operation"], registry=reg)
        self.provider_rejected_total = Counter("payguard_provider_rejected",
                                         "Provider calls refused at once: waiting room full",
                                         registry=reg)
        self.provider_in_flight = Gauge("payguard_provider_in_flight",
                                        "Provider calls running now", registry=reg,
                                        multiprocess_mode="livesum")
        self.gateway_queue = Gauge("payguard_provider_queue_depth",
                                   "Provider calls waiting for a slot (gateway queue depth)",
                                   registry=reg, multiprocess_mode="livesum")
        self.batch_size = Histogram("payguard_batch_size",
                                    "Commands per group-commit batch (wallet purchases, "
                                    "adjustments)", buckets=BATCH_BUCKETS, registry=reg)
        self.batch_queue_depth = Histogram("payguard_batch_queue_depth",
                                           "Commands waiting when the writer took a batch "
                                           "(the batch included)", buckets=BATCH_BUCKETS,
                                           registry=reg)
        self.batch_commit = Histogram("payguard_batch_commit_seconds",
                                      "Time from taking a batch to its commit",
                                      buckets=LATENCY_BUCKETS, registry=reg)

    # -- MetricsSink: recorded where it happens --------------------------------------------

    def request(self, method: str, route: str, status: int, seconds: float) -> None:
        self.requests.labels(method, route, str(status)).inc()
        self.latency.labels(method, route).observe(seconds)

    def idempotency(self, outcome: IdempotencyOutcome) -> None:
        self.idempotency_requests.labels(outcome).inc()

    def lock_acquired(self, waited_seconds: float) -> None:
        self.lock_acquired_total.inc()
        self.lock_wait.inc(waited_seconds)

    def lock_timed_out(self) -> None:
        self.lock_timeouts.inc()

    def lock_lost(self) -> None:
        self.lock_lost_total.inc()

    def outbox_message(self, outcome: OutboxOutcome, count: int = 1) -> None:
        self.outbox_messages.labels(outcome).inc(count)

    def provider_call(self, operation: str, seconds: float, ok: bool) -> None:
        self.provider_latency.labels(operation).observe(seconds)
        if not ok:
            self.provider_errors.labels(operation).inc()

    def provider_rejected(self) -> None:
        self.provider_rejected_total.inc()

    def provider_load(self, in_flight: int, queued: int) -> None:
        self.provider_in_flight.set(in_flight)
        self.gateway_queue.set(queued)

    def webhook_event(self, event_type: str, outcome: str) -> None:
        self.webhooks.labels(event_type, outcome).inc()

    def reconcile_run(self, result: str, counts: Mapping[str, int], seconds: float) -> None:
        self.reconcile_runs.labels(result).inc()
        for action, n in counts.items():
            if n:
                self.reconcile_actions.labels(action).inc(n)
        if result != "skipped":
            self.reconcile_seconds.observe(seconds)

    def batch_committed(self, size: int, queue_depth: int, seconds: float) -> None:
        self.batch_size.observe(size)
        self.batch_queue_depth.observe(queue_depth)
        self.batch_commit.observe(seconds)

    # -- the scrape --------------------------------------------------------------------------

    async def scrape(self, ctx: AppContext) -> bytes:
        """The Prometheus text exposition, with the database-wide gauges read now."""
        try:
            self.outbox_backlog.set(await ctx.outbox.backlog())
        except Exception:  # a scrape must not fail because the database is down
            pass
        try:
            self.locks_held.set((await ctx.locks.stats())["active"])
        except Exception:
            pass
        try:
            self.inbox_pending.set(await ctx.inbox.pending())
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


class MetricsMiddleware:
    """Pure ASGI: counts each HTTP request by route template and status, and times it to
    the response headers."""

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
