"""The outbox dispatcher: claim due messages, deliver them, record the outcome.

Each pass is three kinds of short transaction with the delivery outside all of them:

1. claim (one transaction): dead-letter abandoned final attempts, then lease up to
   ``limit`` due rows (``claims.claim_batch``);
2. deliver each claimed message, no transaction open (an SMTP server may take seconds);
3. record each outcome in its own transaction, conditioned on still holding the claim.

Any number of dispatchers, in any number of processes, may run against one database: the
claim guarantees a message is handed to one of them at a time. Delivery is at-least-once
only across a crash (or a stall past the lease) between a successful send and step 3; see
``transport`` for how the stable ``Message-ID`` makes that duplicate recognisable.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Literal

from sqlalchemy.ext.asyncio import AsyncConnection

from payguard.clock import utcnow
from payguard.config import Settings
from payguard.outbox import claims
from payguard.outbox.backoff import backoff_delay
from payguard.outbox.queue import count_pending
from payguard.outbox.transport import (
    MailboxTransport,
    PermanentDeliveryError,
    SmtpTransport,
    Transport,
)
from payguard.outbox.types import ClaimedMessage, PassResult
from payguard.store.schema import PRIMITIVES
from payguard.store.tables import Tables
from payguard.store.uow import Database, UnitOfWork
from payguard.telemetry import NO_METRICS, MetricsSink

__all__ = ["OutboxDispatcher"]

log = logging.getLogger("payguard.outbox")

Outcome = Literal["sent", "failed", "dead", "lost", "released"]

#: Attempts per message when neither ``max_attempts`` nor ``settings`` says otherwise.
DEFAULT_MAX_ATTEMPTS = 10


class OutboxDispatcher:
    """Delivers outbox messages by SMTP (``settings.smtp_url``) or into the local mailbox.

    An application without payguard's ``Settings`` passes ``settings=None`` and its own
    ``transport`` (``SmtpTransport``, or any ``Transport``), and ``tables`` when its
    outbox table has a prefix.

    Counters (``sent_total``, ``failed_total``, ``dead_total``, ``lost_claims_total``,
    ``released_total``, ``errors_total``, ``passes_total``) count this instance's work since
    it was created; each delivery outcome is also reported to ``metrics``.
    """

    def __init__(self, database: Database, settings: Settings | None = None, *,
                 transport: Transport | None = None, lease: float = 60.0,
                 send_timeout: float = 15.0, concurrency: int = 4,
                 backoff_base: float = 2.0, backoff_cap: float = 3600.0,
                 max_attempts: int | None = None,
                 clock: Callable[[], datetime] = utcnow,
                 metrics: MetricsSink = NO_METRICS,
                 tables: Tables = PRIMITIVES) -> None:
        if lease <= send_timeout:
            # Otherwise a slow send could outlive the lease and another dispatcher resend it.
            raise ValueError("lease must be longer than send_timeout")
        self.database = database
        self.tables = tables
        if transport is None and settings is None:
            transport = MailboxTransport()
        if transport is None:
            assert settings is not None
            transport = (SmtpTransport(settings.smtp_url, mail_from=settings.mail_from,
                                       timeout=send_timeout)
                         if settings.smtp_url else MailboxTransport())
        self.transport = transport
        self.lease = timedelta(seconds=lease)
        self.send_timeout = timedelta(seconds=send_timeout)
        self.concurrency = concurrency
        self.backoff_base = backoff_base
        self.backoff_cap = backoff_cap
        self.max_attempts: int = (max_attempts if max_attempts is not None
                                  else settings.outbox_max_attempts if settings is not None
                                  else DEFAULT_MAX_ATTEMPTS)
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        self.clock = clock
        self.metrics = metrics
        self.sent_total = 0
        self.failed_total = 0
        self.dead_total = 0
        self.lost_claims_total = 0
        self.released_total = 0
        self.errors_total = 0
        self.passes_total = 0
        self._wake = asyncio.Event()

    def wake(self) -> None:
        """Start the next pass of ``run_forever`` now (e.g. after a commit that enqueued)."""
        self._wake.set()

    async def backlog(self) -> int:
        """Messages still pending (due now or waiting for a retry)."""
        async with self.database.read() as uow:
            return await count_pending(uow.conn, tables=self.tables)

    async def run_once(self, limit: int = 100) -> PassResult:
        """One pass over at most ``limit`` due messages."""
        result, _claimed = await self._pass(limit)
        return result

    async def run_forever(self, stop: asyncio.Event, interval: float = 1.0,
                          limit: int = 100) -> None:
        """Pass after pass until ``stop`` is set; idle ``interval`` s between passes."""
        while not stop.is_set():
            self._wake.clear()
            try:
                _result, claimed = await self._pass(limit)
            except Exception:  # the database may be down: log, wait, try again
                self.errors_total += 1
                log.exception("outbox pass failed")
                claimed = 0
            if claimed >= limit:
                continue  # a full batch: more are probably due
            await self._idle(stop, interval)

    async def _idle(self, stop: asyncio.Event, interval: float) -> None:
        waiters = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(self._wake.wait())]
        try:
            await asyncio.wait(waiters, timeout=interval, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()
            await asyncio.gather(*waiters, return_exceptions=True)

    async def _pass(self, limit: int) -> tuple[PassResult, int]:
        if limit < 1:
            raise ValueError("limit must be at least 1")
        self.passes_total += 1

        async def claim(uow: UnitOfWork) -> tuple[int, list[ClaimedMessage]]:
            now = self.clock()
            reaped = await claims.reap_abandoned(uow.conn, now=now,
                                                 max_attempts=self.max_attempts,
                                                 tables=self.tables)
            batch = await claims.claim_batch(uow.conn, now=now, lease=self.lease,
                                             limit=limit, max_attempts=self.max_attempts,
                                             tables=self.tables)
            return reaped, batch

        reaped, batch = await self.database.transaction(claim)
        self.dead_total += reaped
        if reaped:
            self.metrics.outbox_message("dead", reaped)
        result: PassResult = {"sent": 0, "failed": 0, "dead": reaped}
        semaphore = asyncio.Semaphore(self.concurrency)

        async def attempt(msg: ClaimedMessage) -> Outcome:
            async with semaphore:
                return await self._attempt(msg)

        outcomes = await asyncio.gather(*(attempt(m) for m in batch), return_exceptions=True)
        first_error: BaseException | None = None
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                first_error = first_error or outcome
            elif outcome in ("sent", "failed", "dead"):
                result[outcome] += 1
        if first_error is not None:
            # Recording failed (database down): those claims lapse and are retried later.
            raise first_error
        return result, len(batch)

    async def _attempt(self, msg: ClaimedMessage) -> Outcome:
        if self.clock() + self.send_timeout > msg.claimed_until:
            # Too little lease left to cover a send (a slow batch): hand it back untried
            # rather than risk a second dispatcher sending it while we still are.
            await self._record(lambda conn: claims.release(conn, msg, tables=self.tables))
            self.released_total += 1
            return "released"
        try:
            await self.transport.deliver(msg)
        except PermanentDeliveryError as exc:
            return await self._failed(msg, f"permanent: {exc}", final=True)
        except Exception as exc:  # any transport failure is one failed attempt
            return await self._failed(msg, f"{type(exc).__name__}: {exc}",
                                      final=msg.attempt >= self.max_attempts)
        now = self.clock()
        if await self._record(lambda conn: claims.mark_sent(conn, msg, now=now,
                                                              transport=self.transport.name,
                                                              tables=self.tables)):
            self.sent_total += 1
            self.metrics.outbox_message("sent")
            return "sent"
        return self._lost(msg)

    async def _failed(self, msg: ClaimedMessage, error: str, *, final: bool) -> Outcome:
        retry_at = None if final else self.clock() + timedelta(seconds=backoff_delay(
            msg.attempt, base=self.backoff_base, cap=self.backoff_cap))
        if not await self._record(
                lambda conn: claims.mark_failed(conn, msg, error=error, retry_at=retry_at,
                                                tables=self.tables)):
            return self._lost(msg)
        log.warning("outbox message %s attempt %d failed (%s): %s", msg.dedupe_key,
                    msg.attempt, "dead" if final else f"retry at {retry_at}", error)
        if final:
            self.dead_total += 1
            self.metrics.outbox_message("dead")
            return "dead"
        self.failed_total += 1
        self.metrics.outbox_message("failed")
        return "failed"

    def _lost(self, msg: ClaimedMessage) -> Outcome:
        # Our lease lapsed and another dispatcher re-claimed the row; its outcome stands.
        self.lost_claims_total += 1
        log.warning("outbox message %s: claim for attempt %d was taken over",
                    msg.dedupe_key, msg.attempt)
        return "lost"

    async def _record(self, update: Callable[[AsyncConnection], Awaitable[bool]]) -> bool:
        """Run one conditional update in its own short transaction."""
        return await self.database.transaction(lambda uow: update(uow.conn))
