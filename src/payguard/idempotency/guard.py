"""Running a request under an idempotency key: claim, effects, stored response, replay.

    guard = IdempotencyGuard(db, ttl=86400, lock_timeout=60, render_error=render)
    outcome = await guard.execute(principal="usr_1", key=key, method="POST",
                                  path="/api/purchases", body=raw_body, effects=do_purchase)

Local operations (``execute``): the claim commits on its own (so a duplicate sees
"in progress" at once), then the effects and the stored response commit together in one
transaction. "Effects committed" and "response stored" can therefore never disagree: a
crash before that commit leaves only the claim, which a retry takes over after the lock
timeout and runs from scratch.

Operations with outside calls (``execute_phased``): the handler runs its own atomic phases
and records each with ``store.advance`` (a recovery point); a retry after a crash gets the
claim back with its recovery point and resumes from there.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from payguard.clock import utcnow
from payguard.errors import (
    CommitOutcomeUnknown,
    DatabaseUnavailable,
    IdempotencyKeyReused,
    LimitReached,
    PayguardError,
    PaymentInProgress,
    RequestInProgress,
)
from payguard.idempotency import store
from payguard.idempotency.keys import fingerprint
from payguard.idempotency.store import Claim, StoredResponse
from payguard.store.schema import PRIMITIVES
from payguard.store.tables import Tables
from payguard.store.uow import Database, UnitOfWork
from payguard.telemetry import NO_METRICS, MetricsSink

__all__ = ["IdempotencyGuard", "Outcome"]

Effects = Callable[[UnitOfWork, Claim], Awaitable[StoredResponse]]
PhasedHandler = Callable[[Claim], Awaitable[StoredResponse]]
RenderError = Callable[[PayguardError], StoredResponse]


@dataclass(frozen=True, slots=True)
class Outcome:
    """What a guarded request answers: the response, and whether it is a replay of the
    response stored by an earlier request with the same key."""

    response: StoredResponse
    replayed: bool


class IdempotencyGuard:
    """Runs a request at most once per ``(principal, key)`` and replays its response.

    ``render_error`` turns a ``PayguardError`` raised by the effects into the response
    stored for the key (a 4xx is stored and replayed; a 5xx gives the key back);
    ``payguard.problem_response`` renders RFC 9457 problem+json. ``tables``: the bundle
    of ``payguard.tables(prefix)`` the keys live in.
    """

    def __init__(self, db: Database, *, ttl: float, lock_timeout: float,
                 render_error: RenderError, clock: Callable[[], datetime] = utcnow,
                 hold_seconds: float = 0.0, holder_id: str | None = None,
                 holder_lease: float | None = None,
                 metrics: MetricsSink = NO_METRICS,
                 max_keys_per_hour: int | None = None,
                 tables: Tables = PRIMITIVES) -> None:
        self.db = db
        self.tables = tables
        # The process running the claims (``payguard.holders``): a retry takes over a key
        # whose holder stopped renewing its heartbeat for ``holder_lease`` seconds.
        self.holder_id = holder_id
        self.holder_lease = holder_lease
        self.ttl = ttl
        self.lock_timeout = lock_timeout
        self.render_error = render_error
        self.clock = clock
        self.metrics = metrics
        #: New keys a principal may store per hour (``None``: unlimited; admin exempt).
        self.max_keys_per_hour = max_keys_per_hour
        # Releases that found no database (a failover) and are retried in the background.
        self._pending_releases: set[asyncio.Task[None]] = set()
        # Test hook: keep claimed requests waiting before their effects, so a crash test
        # can kill the process while requests are demonstrably in flight.
        self.hold_seconds = hold_seconds

    async def _claim(self, principal: str, key: str, method: str, path: str,
                     body: bytes, operation: str | None) -> Claim | Outcome:
        fp = fingerprint(method, path, body)
        # A replay, the most common retry, is answered by this one indexed read.
        settled = await store.lookup(self.db.hot, principal=principal, key=key,
                                     fingerprint=fp, now=self.clock(), tables=self.tables)

        owner = store.new_owner()

        async def attempt(uow: UnitOfWork) -> store.ClaimResult:
            if self.max_keys_per_hour is not None and principal != "admin":
                await self._check_key_budget(uow, principal)
            return await store.claim(
                uow.conn, principal=principal, key=key, fingerprint=fp, method=method,
                path=path, now=self.clock(), ttl=self.ttl, lock_timeout=self.lock_timeout,
                owner=owner, holder_id=self.holder_id, holder_lease=self.holder_lease,
                tables=self.tables, operation=operation,
            )

        if settled is not None:
            result = settled
        else:
            try:
                # The claim commits on its own, so a duplicate sees "in progress" at once.
                result = await self.db.transaction(attempt)
            except CommitOutcomeUnknown:
                # The claim may or may not have reached the new primary. If it did, nobody
                # would release it until the lock timeout: do it once a server answers.
                async def unclaim(uow: UnitOfWork) -> None:
                    await store.release_unconfirmed(uow.conn, principal=principal, key=key,
                                                    owner=owner, tables=self.tables)

                self._release_in_background(unclaim)
                raise
        if result.kind == "mismatch":
            self.metrics.idempotency("mismatched")
            raise IdempotencyKeyReused(
                "this Idempotency-Key was used with a different method, path or body"
            )
        if result.kind == "in_progress":
            self.metrics.idempotency("in_progress")
            raise RequestInProgress("a request with this Idempotency-Key is still running")
        if result.kind == "replay":
            assert result.response is not None
            self.metrics.idempotency("replayed")
            return Outcome(result.response, replayed=True)
        assert result.claim is not None
        self.metrics.idempotency("claimed")
        if result.claim.recovered:
            self.metrics.idempotency("recovered")
        return result.claim

    async def _check_key_budget(self, uow: UnitOfWork, principal: str) -> None:
        assert self.max_keys_per_hour is not None
        since = self.clock() - timedelta(hours=1)
        recent = await store.count_recent(uow.conn, principal, since,
                                          cap=self.max_keys_per_hour, tables=self.tables)
        if recent >= self.max_keys_per_hour:
            raise LimitReached(
                f"{self.max_keys_per_hour} idempotency keys in the last hour is the limit "
                "per user; retry later or reuse keys for retries only", retry_after=60)

    async def execute(self, *, principal: str, key: str, method: str, path: str,
                      body: bytes, effects: Effects, operation: str | None = None) -> Outcome:
        """Run a purely local operation at most once for ``(principal, key)``."""
        claimed = await self._claim(principal, key, method, path, body, operation)
        if isinstance(claimed, Outcome):
            return claimed
        claim_ = claimed

        async def run() -> StoredResponse:
            if self.hold_seconds:
                await asyncio.sleep(self.hold_seconds)

            async def apply(uow: UnitOfWork) -> StoredResponse:
                response = await effects(uow, claim_)
                if not await store.finish(uow.conn, claim_, response, self.clock(),
                                          tables=self.tables):
                    raise RequestInProgress("this request's claim was taken over by a retry")
                return response

            return await self.db.transaction(apply)

        return await self._settle(claim_, run)

    async def _settle(self, claim_: Claim,
                      run: Callable[[], Awaitable[StoredResponse]]) -> Outcome:
        """Run the request; a 4xx is stored for replay, a 5xx or crash gives the key back.

        So do the transient 409s (``REQUEST_IN_PROGRESS``, ``PAYMENT_IN_PROGRESS``): they
        say "retry shortly" (with ``Retry-After``), which only works if the retry with the
        same key runs the request again instead of replaying the 409.

        Whether an error is a 4xx is the renderer's answer (the API's mapping), never the
        error's own: domain errors know no HTTP.
        """
        try:
            response = await run()
        except PayguardError as exc:
            rendered = self.render_error(exc)
            if rendered.status >= 500 or isinstance(exc, (RequestInProgress, PaymentInProgress)):
                await self._release(claim_)
                raise
            return Outcome(await self._store(claim_, rendered), replayed=False)
        except BaseException:
            await self._release(claim_)
            raise
        return Outcome(response, replayed=False)

    async def execute_phased(self, *, principal: str, key: str, method: str, path: str,
                             body: bytes, handler: PhasedHandler,
                             operation: str | None = None) -> Outcome:
        """Run an operation made of atomic phases; ``handler`` resumes from the claim's
        recovery point and returns the final response, which is then stored.

        ``operation`` names the kind of request on the claim, so the reconciler can finish
        an abandoned one of a kind it knows (``"checkout"``) without looking at its path."""
        claimed = await self._claim(principal, key, method, path, body, operation)
        if isinstance(claimed, Outcome):
            return claimed
        claim_ = claimed

        async def run() -> StoredResponse:
            return await self._store(claim_, await handler(claim_))

        return await self._settle(claim_, run)

    async def _store(self, claim_: Claim, response: StoredResponse) -> StoredResponse:
        """Keep ``response`` as the key's answer, in a transaction of its own."""
        async def save(uow: UnitOfWork) -> None:
            await store.finish(uow.conn, claim_, response, self.clock(), tables=self.tables)

        await self.db.transaction(save)
        return response

    async def _release(self, claim_: Claim) -> None:
        async def drop(uow: UnitOfWork) -> None:
            await store.release(uow.conn, claim_, tables=self.tables)

        try:
            # Shielded: a cancelled request must still give its key back.
            await asyncio.shield(self.db.transaction(drop))
        except DatabaseUnavailable:
            # No server to release on (a failover). Keep trying in the background: the
            # release only deletes a key that is still in progress under this claim, so
            # doing it late is safe: if the effects' COMMIT did reach the new primary the
            # key is completed and stays (the retry gets the stored answer); if it did not,
            # the key goes and the retry runs the request afresh. Nothing is guessed.
            self._release_in_background(drop)
            return
        self.metrics.idempotency("released")

    def _release_in_background(self, drop: Callable[[UnitOfWork], Awaitable[None]]) -> None:
        task = asyncio.create_task(self._release_when_reachable(drop))
        self._pending_releases.add(task)
        task.add_done_callback(self._pending_releases.discard)

    async def _release_when_reachable(self, drop: Callable[[UnitOfWork], Awaitable[None]]
                                      ) -> None:
        # Past the lock timeout a retry takes the key over anyway; stop trying then.
        deadline = asyncio.get_running_loop().time() + self.lock_timeout
        delay = 0.1
        while asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(delay)
            try:
                await self.db.transaction(drop)
            except DatabaseUnavailable:
                delay = min(1.0, delay * 2)
                continue
            self.metrics.idempotency("released")
            return
