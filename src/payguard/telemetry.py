"""What the parts of payguard report, as one small typed interface.

The idempotency guard, the lock service, the outbox dispatcher, the provider adapter, the
webhook service and the reconciler each take a ``MetricsSink`` and call it where the thing
happens. ``MetricsSink`` itself records nothing, so it is the default (CLI tools, tests);
``payguard.metrics.Metrics`` overrides every method to feed Prometheus. This module imports
nothing from payguard, so every layer may depend on it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

__all__ = ["NO_METRICS", "IdempotencyOutcome", "MetricsSink", "OutboxOutcome"]

IdempotencyOutcome = Literal["claimed", "replayed", "in_progress", "mismatched", "released",
                             "recovered"]
OutboxOutcome = Literal["sent", "failed", "dead"]


class MetricsSink:
    """Receives measurements; this base class drops them."""

    def idempotency(self, outcome: IdempotencyOutcome) -> None:
        """A keyed request reached ``outcome`` (``recovered`` comes with ``claimed``)."""

    def lock_acquired(self, waited_seconds: float) -> None:
        """A lease was granted after waiting ``waited_seconds``."""

    def lock_timed_out(self) -> None:
        """A lease request gave up waiting."""

    def lock_lost(self) -> None:
        """A lease lapsed or was taken over while held."""

    def outbox_message(self, outcome: OutboxOutcome, count: int = 1) -> None:
        """``count`` delivery attempts ended with ``outcome``."""

    def provider_call(self, operation: str, seconds: float, ok: bool) -> None:
        """A call to the payment provider finished (``ok=False``: it failed)."""

    def provider_rejected(self) -> None:
        """A provider call was refused at once: the waiting room was full."""

    def provider_load(self, in_flight: int, queued: int) -> None:
        """Provider calls running and waiting for a slot, now."""

    def webhook_event(self, event_type: str, outcome: str) -> None:
        """A webhook delivery was handled with ``outcome`` (``duplicate`` for repeats)."""

    def reconcile_run(self, result: str, counts: Mapping[str, int], seconds: float) -> None:
        """A reconciler run ended: ``ok``, ``error`` or ``skipped``."""

    def batch_committed(self, size: int, queue_depth: int, seconds: float) -> None:
        """The group-commit writer committed a batch of ``size`` commands, taken when
        ``queue_depth`` were waiting (the batch included), ``seconds`` after taking it."""


#: The shared do-nothing sink.
NO_METRICS = MetricsSink()
