"""Group commit: one writer task per process applies queued wallet commands in batches.

    writer = BatchWriter(db, settings, render_ok=..., render_error=...)
    writer.start()
    outcome = await writer.submit(principal="usr_1", key=key, method="POST",
                                  path="/api/purchases", body=raw, command=WalletPurchase(...))

Handlers hand a command to ``submit`` and await its ``Outcome``. The writer takes whatever
queued while the previous batch was committing (up to ``batch_max``), and in ONE
transaction claims every key (``idempotency.store.claim_many``), applies the commands
(``service.wallet_batch``), stores every response with its key (``finish_many``) and
commits; only then is each caller answered. Nothing is ever "in progress" in the database
between two transactions, so a process killed mid-batch leaves nothing behind: retries
with the same keys run from scratch, once.

Contract kept from the lone path (``IdempotencyGuard``): a 4xx is stored and replayed;
the same key twice in flight answers ``409 REQUEST_IN_PROGRESS`` (in this process: at
once; from another process: its batch waits for the key's row, then replays it); a
different body under a key is ``422``. A full queue answers ``503 OVERLOADED`` with
``Retry-After``. A caller that goes away does not cancel anything: the command stays in its
batch and its response is stored for the retry.

Faults: retryable errors (deadlock, serialization failure, SQLite busy) re-run the whole
batch with a bound (``Database.transaction``, which also commits it: the batch function
never commits). A database that is unreachable (``DatabaseUnavailable`` or
``CommitOutcomeUnknown``, 503s from the transaction helper) fails the batch's callers with
that 503: their retries with the same keys replay or apply, once, since keys and effects
commit together. Any other error rolls the batch
back and applies its halves separately, down to single commands, so one poison command
fails alone (a 500 that leaves its key free) and no innocent command fails with it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from payguard.clock import utcnow
from payguard.config import Settings
from payguard.errors import (
    IdempotencyKeyReused,
    LimitReached,
    Overloaded,
    PayguardError,
    RequestInProgress,
)
from payguard.idempotency import Outcome, StoredResponse, fingerprint
from payguard.idempotency import store as keys
from payguard.service.wallet_batch import WalletCommand, WalletPurchase, apply_wallet_commands
from payguard.store.uow import Database, UnitOfWork
from payguard.telemetry import NO_METRICS, MetricsSink

__all__ = ["BatchStats", "BatchWriter"]

log = logging.getLogger("payguard.batch")

RenderOk = Callable[[dict[str, Any], int], StoredResponse]
RenderError = Callable[[PayguardError], StoredResponse]


@dataclass(slots=True)
class _Pending:
    request: keys.KeyRequest
    command: WalletCommand
    status: int
    future: asyncio.Future[Outcome]


@dataclass(slots=True)
class BatchStats:
    """Plain counters for the admin panel (``/metrics`` gets histograms from the
    ``MetricsSink``)."""

    batches: int = 0
    commands: int = 0
    max_size: int = 0
    last_size: int = 0
    max_queue_depth: int = 0
    commit_seconds: float = 0.0
    splits: int = 0
    failed_commands: int = 0
    overloaded: int = 0
    queued: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "batches": self.batches, "commands": self.commands,
            "mean_size": round(self.commands / self.batches, 2) if self.batches else 0.0,
            "max_size": self.max_size, "last_size": self.last_size,
            "queue_depth": self.queued, "max_queue_depth": self.max_queue_depth,
            "avg_commit_ms": round(1000 * self.commit_seconds / self.batches, 2)
            if self.batches else 0.0,
            "splits": self.splits, "failed_commands": self.failed_commands,
            "overloaded": self.overloaded,
        }


class BatchWriter:
    """The per-process group-commit writer for wallet purchases and adjustments."""

    def __init__(self, db: Database, settings: Settings, *, render_ok: RenderOk,
                 render_error: RenderError, metrics: MetricsSink = NO_METRICS,
                 clock: Callable[[], datetime] = utcnow, holder_id: str | None = None,
                 holder_lease: float | None = None) -> None:
        self.db = db
        self.settings = settings
        self.render_ok = render_ok
        self.render_error = render_error
        self.metrics = metrics
        self.clock = clock
        # This process as a holder (``payguard.holders``): keys a batch takes over from a
        # dead process's claim record it. The batch's own claims never outlive its commit.
        self.holder_id = holder_id
        self.holder_lease = holder_lease
        self.max_batch = settings.batch_max
        self.stats = BatchStats()
        self._queue: asyncio.Queue[_Pending] = asyncio.Queue(maxsize=settings.batch_queue)
        self._in_flight: set[tuple[str, str]] = set()
        self._task: asyncio.Task[None] | None = None

    # -- callers -------------------------------------------------------------------------

    async def submit(self, *, principal: str, key: str, method: str, path: str, body: bytes,
                     command: WalletCommand, status: int = 201) -> Outcome:
        """Queue ``command`` under ``(principal, key)`` and wait for its committed outcome.

        Raises ``RequestInProgress`` (same key already queued or running here),
        ``Overloaded`` (queue full), ``IdempotencyKeyReused`` (key used with another
        request), or the unexpected error that failed the command alone.
        """
        if self._task is None:
            self.start()
        slot = (principal, key)
        if slot in self._in_flight:
            self.metrics.idempotency("in_progress")
            raise RequestInProgress("a request with this Idempotency-Key is still running")
        future: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
        pending = _Pending(keys.KeyRequest(principal, key, fingerprint(method, path, body),
                                           method, path), command, status, future)
        try:
            self._queue.put_nowait(pending)
        except asyncio.QueueFull:
            self.stats.overloaded += 1
            raise Overloaded("the write queue is full; retry with the same key") from None
        self._in_flight.add(slot)
        future.add_done_callback(lambda _f: self._in_flight.discard(slot))
        # Shielded: a client that disconnects cancels its handler, never its command.
        return await asyncio.shield(future)

    # -- lifecycle -----------------------------------------------------------------------

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(),
                                                                name="batch-writer")

    async def close(self) -> None:
        """Stop taking batches; callers still queued get ``Overloaded`` (retry elsewhere)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        while not self._queue.empty():
            pending = self._queue.get_nowait()
            if not pending.future.done():
                pending.future.set_exception(Overloaded("the service is shutting down"))

    # -- the writer ----------------------------------------------------------------------

    async def _run(self) -> None:
        linger = self.settings.batch_linger_ms / 1000
        while True:
            batch = [await self._queue.get()]
            if linger:
                await asyncio.sleep(linger)
            while len(batch) < self.max_batch and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            depth = len(batch) + self._queue.qsize()
            self.stats.queued = self._queue.qsize()
            self.stats.max_queue_depth = max(self.stats.max_queue_depth, depth)
            try:
                await self._apply(batch, depth)
            except asyncio.CancelledError:
                for pending in batch:
                    if not pending.future.done():
                        pending.future.set_exception(Overloaded("the service is shutting down"))
                raise
            except Exception:  # pragma: no cover - _apply resolves every command itself
                log.exception("batch writer failed")

    async def _apply(self, batch: list[_Pending], depth: int) -> None:
        """Commit ``batch`` and answer its callers; split it when it fails."""
        started = time.perf_counter()
        try:
            outcomes = await self.db.transaction(lambda uow: self._transaction(uow, batch))
        except PayguardError as exc:
            # The database itself failed (503 unavailable, commit outcome unknown): no
            # command is to blame, so splitting would only repeat the wait. Every caller
            # gets the 503; its retry with the same key replays or applies, once.
            self.stats.failed_commands += len(batch)
            log.warning("batch of %d failed: %r", len(batch), exc)
            for pending in batch:
                if not pending.future.done():
                    pending.future.set_exception(exc)
            return
        except Exception as exc:
            if len(batch) == 1:
                self.stats.failed_commands += 1
                log.error("command failed alone, its key stays free: %r", exc)
                if not batch[0].future.done():
                    batch[0].future.set_exception(exc)
                return
            self.stats.splits += 1
            log.warning("batch of %d failed (%r); applying it in halves", len(batch), exc)
            half = len(batch) // 2
            await self._apply(batch[:half], depth)
            await self._apply(batch[half:], depth)
            return
        seconds = time.perf_counter() - started
        self._record(len(batch), depth, seconds)
        for pending, outcome in zip(batch, outcomes, strict=True):
            if isinstance(outcome, PayguardError):
                self._count_refusal(outcome)
                if not pending.future.done():
                    pending.future.set_exception(outcome)
                continue
            self.metrics.idempotency("replayed" if outcome.replayed else "claimed")
            if not pending.future.done():
                pending.future.set_result(outcome)

    async def _transaction(self, uow: UnitOfWork, batch: list[_Pending]
                           ) -> list[Outcome | PayguardError]:
        conn, now = uow.conn, self.clock()
        budgets = await self._key_budgets(conn, batch, now)  # before this batch's claims
        claims = await keys.claim_many(
            conn, [p.request for p in batch], now=now, ttl=self.settings.idempotency_ttl,
            lock_timeout=self.settings.idempotency_lock_timeout,
            holder_id=self.holder_id, holder_lease=self.holder_lease)
        outcomes: list[Outcome | PayguardError | None] = [None] * len(batch)
        runs: list[int] = []
        for i, result in enumerate(claims):
            if result.kind == "claimed":
                principal = batch[i].request.principal
                if principal in budgets:
                    if budgets[principal] <= 0:
                        # Over the per-user budget of keys (as IdempotencyGuard): refused,
                        # and the key given back, so nothing of it is stored.
                        assert result.claim is not None
                        await keys.release(conn, result.claim)
                        outcomes[i] = LimitReached(
                            f"{self.settings.max_keys_per_hour} idempotency keys in the last "
                            "hour is the limit per user; retry later or reuse keys for "
                            "retries only", retry_after=60)
                        continue
                    budgets[principal] -= 1
                runs.append(i)
            elif result.kind == "replay":
                assert result.response is not None
                outcomes[i] = Outcome(result.response, replayed=True)
            elif result.kind == "mismatch":
                outcomes[i] = IdempotencyKeyReused(
                    "this Idempotency-Key was used with a different method, path or body")
            else:
                outcomes[i] = RequestInProgress(
                    "a request with this Idempotency-Key is still running")
        if self.settings.test_hold_seconds:
            # Test hook: keep the batch open so a crash test can kill the process mid-batch.
            await asyncio.sleep(self.settings.test_hold_seconds)
        results = await apply_wallet_commands(
            conn, self.settings, [batch[i].command for i in runs], now)
        done: list[tuple[keys.Claim, StoredResponse]] = []
        # Each key names the purchase it made (the admin purchase detail finds it by key).
        made: list[str | None] = []
        for i, applied in zip(runs, results, strict=True):
            response = (self.render_error(applied) if isinstance(applied, PayguardError)
                        else self.render_ok(applied, batch[i].status))
            claim = claims[i].claim
            assert claim is not None
            done.append((claim, response))
            made.append(applied["id"] if isinstance(applied, dict)
                        and isinstance(batch[i].command, WalletPurchase) else None)
            outcomes[i] = Outcome(response, replayed=False)
        if not await keys.finish_many(conn, done, now, purchase_ids=made):
            raise RuntimeError("a key claimed by this batch was taken over before commit")
        # Database.transaction commits when this returns.
        return [o for o in outcomes if o is not None]

    async def _key_budgets(self, conn: AsyncConnection, batch: list[_Pending], now: datetime
                           ) -> dict[str, int]:
        """New keys each (non-admin) principal of the batch may still store this hour,
        counted before this batch's claims, as ``IdempotencyGuard`` counts them."""
        cap = self.settings.max_keys_per_hour
        principals = {p.request.principal for p in batch} - {"admin"}
        used = await keys.count_recent_many(conn, principals, now - timedelta(hours=1))
        return {principal: cap - used.get(principal, 0) for principal in principals}

    def _record(self, size: int, depth: int, seconds: float) -> None:
        stats = self.stats
        stats.batches += 1
        stats.commands += size
        stats.last_size = size
        stats.max_size = max(stats.max_size, size)
        stats.commit_seconds += seconds
        self.metrics.batch_committed(size, depth, seconds)

    def _count_refusal(self, exc: PayguardError) -> None:
        if isinstance(exc, IdempotencyKeyReused):
            self.metrics.idempotency("mismatched")
        elif isinstance(exc, RequestInProgress):
            self.metrics.idempotency("in_progress")
