"""Applies acknowledged webhook events from the inbox, provider-neutrally, with retries.

A webhook endpoint verifies the delivery, commits it to the inbox as ``pending`` and
answers 2xx at once (a provider that waits retries, multiplying the storm that made it
wait); it then hands the event to ``InboxApplier.submit``, which applies it in the
background. ``poll`` (on a timer in ``serve``) picks up whatever is still pending: events
whose apply failed (after their backoff) and events whose receiving process died (after
its lease lapsed).

Each provider registers a ``Prepare`` function (``register``): it does the slow outside
work (ask the provider for the truth, find the purchase) and returns an ``Application``:
the outcome, and optionally the effects to run in the apply transaction and a follow-up
after the commit. The apply transaction flips the inbox row ``pending -> applied`` FIRST
(``inbox.mark_applied``, a conditional update), so an event is applied exactly once
however many appliers, in however many processes, race for it: the loser waits on the row
and then finds it applied, and rolls back having done nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta

from payguard import inbox
from payguard.clock import utcnow
from payguard.inbox import InboxEvent
from payguard.outbox.backoff import backoff_delay
from payguard.store.uow import Database, UnitOfWork
from payguard.telemetry import NO_METRICS, MetricsSink

__all__ = ["Application", "InboxApplier", "Prepare"]

log = logging.getLogger("payguard.inbox")


@dataclass(frozen=True, slots=True)
class Application:
    """What applying one event means, decided outside any transaction."""

    outcome: str
    # Run inside the apply transaction, after the inbox row was flipped; returns the final
    # outcome. None: nothing to change besides recording the outcome.
    effects: Callable[[UnitOfWork], Awaitable[str]] | None = None
    # Run after the commit with the final outcome (e.g. push a booked refund out).
    after: Callable[[str], Awaitable[object]] | None = None


Prepare = Callable[[InboxEvent], Awaitable[Application]]


class InboxApplier:
    """One per process (``ctx.inbox``). ``submit`` for events this process just received,
    ``poll`` for everything else that is due."""

    def __init__(self, db: Database, *, lease: float = 30.0, concurrency: int = 8,
                 retry_cap: float = 300.0, metrics: MetricsSink = NO_METRICS) -> None:
        self.db = db
        self.lease = lease
        self.retry_cap = retry_cap
        self.metrics = metrics
        self._prepare: dict[str, Prepare] = {}
        self._slots = asyncio.Semaphore(concurrency)
        self._tasks: set[asyncio.Task[None]] = set()
        self.applied = 0
        self.failed = 0

    def register(self, provider: str, prepare: Prepare) -> None:
        """How events of ``provider`` are applied."""
        self._prepare[provider] = prepare

    def submit(self, event: InboxEvent) -> None:
        """Apply ``event`` soon, in the background (the caller holds its lease)."""
        task = asyncio.create_task(self._bounded(event))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def poll(self, limit: int = 50) -> int:
        """Lease and apply the pending events that are due. Returns how many were leased."""
        # A read first: an idle sweep must not take SQLite's write lock every second.
        async with self.db.read() as uow:
            if not await inbox.any_due(uow.conn, now=utcnow()):
                return 0
        events = await self.db.transaction(lambda uow: inbox.claim_due(
            uow.conn, now=utcnow(), lease=self.lease, limit=limit))
        await asyncio.gather(*(self._bounded(e) for e in events))
        return len(events)

    async def pending(self) -> int:
        """Events received and not applied yet, database-wide (the metrics gauge)."""
        async with self.db.read() as uow:
            return await inbox.pending_count(uow.conn)

    async def drain(self) -> None:
        """Wait for the applies submitted so far (tests, shutdown)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def close(self) -> None:
        """Stop in-flight applies; their events stay pending and are picked up again."""
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _bounded(self, event: InboxEvent) -> None:
        async with self._slots:
            await self.apply(event)

    async def apply(self, event: InboxEvent) -> str | None:
        """Apply one leased event. Returns its outcome, or None when it failed (kept for a
        retry) or had been applied by someone else."""
        try:
            plan = await self._prepare[event.provider](event)

            async def tx(uow: UnitOfWork) -> str | None:
                if not await inbox.mark_applied(uow.conn, event.provider, event.event_id,
                                                outcome=plan.outcome):
                    return None  # applied already, by another delivery or process
                outcome = plan.outcome
                if plan.effects is not None:
                    outcome = await plan.effects(uow)
                    if outcome != plan.outcome:
                        await inbox.set_outcome(uow.conn, event.provider, event.event_id,
                                                outcome)
                return outcome

            outcome = await self.db.transaction(tx)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            await self._failed(event, exc)
            return None
        if outcome is None:
            return None
        self.applied += 1
        self.metrics.webhook_event(event.type, outcome)
        log.info("inbox %s %s %s -> %s", event.provider, event.event_id[:100],
                 event.type[:100], outcome)
        if plan.after is not None:
            try:
                await plan.after(outcome)
            except Exception:  # the follow-up has its own recovery (the reconciler)
                log.exception("after-apply step of %s failed", event.event_id[:100])
        return outcome

    async def _failed(self, event: InboxEvent, exc: Exception) -> None:
        """The event stays pending, with the error and a next attempt time, and is
        counted (``outcome=apply_failed``); ``poll`` retries it after the backoff."""
        self.failed += 1
        self.metrics.webhook_event(event.type, "apply_failed")
        delay = backoff_delay(event.attempts + 1, base=1.0, cap=self.retry_cap)
        log.warning("inbox %s %s: apply failed (attempt %d), retry in %.1fs: %r",
                    event.provider, event.event_id[:100], event.attempts + 1, delay, exc)
        try:
            await self.db.transaction(lambda uow: inbox.record_failure(
                uow.conn, event.provider, event.event_id, error=repr(exc),
                retry_at=utcnow() + timedelta(seconds=delay)))
        except Exception:  # the lease lapses on its own; poll() retries after it
            log.exception("could not record the failure of %s", event.event_id[:100])
