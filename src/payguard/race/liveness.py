"""Liveness: waiting for the service to converge after a storm, and recovery times.

Convergence is read from ``GET /api/admin/in-flight``: no idempotency key in progress, no
lease held, no pending checkout without its provider session. While the service is not
quiet the harness triggers the reconciler (``POST /api/admin/reconcile?older_than=0``), as an
operator would; a server without that endpoint (another implementation) is reported as
"not observable" instead of failing.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

from payguard.race.client import EndpointMissing, RaceClient, new_key
from payguard.race.faults import FaultSchedule
from payguard.race.stats import percentile
from payguard.race.types import Invariant, Liveness, Sample

__all__ = ["Convergence", "liveness_invariants", "recovery_times", "wait_for_convergence"]

_POLL = 0.25
_RECONCILE_AFTER = 3.0  # seconds not quiet before the harness runs the reconciler
_RECONCILE_EVERY = 10.0  # and then at most this often


@dataclass(frozen=True)
class Convergence:
    quiet: bool
    observable: bool
    at: float  # time.monotonic() when it was seen quiet (or gave up)
    detail: str
    reconciles: int = 0


def _describe(state: dict[str, Any]) -> str:
    return (f"{state.get('keys_in_progress')} keys in progress "
            f"({state.get('keys_of_dead_holders')} of dead holders), "
            f"{state.get('locks_held')} locks held {state.get('locks') or ''}, "
            f"{state.get('checkouts_without_session')} checkouts without session, "
            f"lock backend {state.get('lock_backend_health')}").replace(" []", "")


async def wait_for_convergence(client: RaceClient, within: float) -> Convergence:
    started = time.monotonic()
    deadline = started + within
    last_reconcile = started
    reconciles = 0
    detail = "no answer from /api/admin/in-flight"
    while True:
        try:
            reply = await client.request("GET", "/api/admin/in-flight", retry=False)
        except EndpointMissing:
            return Convergence(True, False, time.monotonic(),
                               "not observable: the server has no /api/admin/in-flight")
        state = reply.body if reply.status == 200 and isinstance(reply.body, dict) else None
        if state is not None:
            detail = _describe(state)
            if state.get("quiet") is True:
                return Convergence(True, True, time.monotonic(), detail, reconciles)
        now = time.monotonic()
        if now >= deadline:
            return Convergence(False, True, now, detail, reconciles)
        if now - last_reconcile >= (_RECONCILE_EVERY if reconciles else _RECONCILE_AFTER):
            last_reconcile = now
            reconciles += 1
            # Retried (same key) until an instance answers: with instances killed every few
            # seconds, a single try mostly meets a dead one and nobody cleans up.
            await client.request("POST", "/api/admin/reconcile?older_than=0", key=new_key())
        await asyncio.sleep(_POLL)


def recovery_times(samples: list[Sample], schedule: FaultSchedule | None) -> list[float]:
    """For every finished request whose lifetime saw a fault injected: seconds from the last
    such fault to its final answer."""
    if schedule is None or not schedule.events:
        return []
    out: list[float] = []
    for s in samples:
        if not s.finished or not s.ended_at:
            continue
        event = schedule.injected_between(s.ended_at - s.latency, s.ended_at)
        if event is not None:
            out.append(s.ended_at - (schedule.started + event.at))
    return out


def liveness_invariants(samples: list[Sample], conv: Convergence, live: Liveness,
                        within: float) -> list[Invariant]:
    unfinished = [s for s in samples if not s.finished]
    shown = ", ".join(sorted({f"{s.op}: {s.status} {s.code or ''}".strip()
                              for s in unfinished})[:5])
    rec = live.recovery
    timing = (f"; after a fault: max {max(rec):.2f} s, p99 {percentile(rec, 99):.2f} s "
              f"over {len(rec)} requests" if rec else "")
    settle = (f" {live.settle:.2f} s after the last fault" if live.settle is not None else "")
    quiet_how = (f" (reconciler run {conv.reconciles}x)" if conv.reconciles else "")
    return [
        Invariant("every request got a final answer", not unfinished,
                  (f"{len(samples)} of {len(samples)} finished" if not unfinished else
                   f"{len(unfinished)} of {len(samples)} unfinished: {shown}") + timing,
                  kind="liveness"),
        Invariant("service converged (nothing in flight)", conv.quiet,
                  (f"quiet{settle}{quiet_how}" if conv.quiet and conv.observable
                   else conv.detail if conv.quiet
                   else f"still not quiet after {within:g} s: {conv.detail}"),
                  kind="liveness"),
    ]
