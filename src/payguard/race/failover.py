"""The ``--failover-after`` fault: lose the PostgreSQL primary mid-storm, promote the standby.

Timeline (``FailoverTimings``, seconds from the start of the run):
1. ``failover_after`` seconds in, the primary's WAL senders are frozen for ``lag``
   seconds: the standby falls behind, as it does on a slow link.
2. The primary is SIGKILLed (every process at once), the standby promoted.
3. From the kill on, a probe writes through the service (``POST /api/admin/users``) until
   one succeeds: the time from the kill to that first successful write is the outage as a
   client sees it, reported next to the same write's median latency just before the
   fault (the same-run baseline).

Afterwards ``failover_result`` checks what only a failover can break: every write that was
answered 2xx is on the promoted server, exactly once (``durability.check_acks``), every
instance reports the promoted server as writable in ``GET /healthz``, and the audit
(through the service, i.e. on the promoted server) is clean.
"""

from __future__ import annotations

import asyncio
import statistics
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from payguard.race.client import RaceClient, new_key
from payguard.race.durability import check_acks
from payguard.race.pgcluster import PgFailoverPair
from payguard.race.types import Invariant, ScenarioResult, ScenarioStatus

__all__ = ["FailoverTimings", "failover_result", "run_failover"]

PROBE_INTERVAL = 0.05
PROBE_MARK = b"failover-probe-"
FOLLOW_TIMEOUT = 30.0


@dataclass
class FailoverTimings:
    started: float
    begun: bool = False  # the fault has started: wait for it rather than cancel it
    stalled: float | None = None
    killed: float | None = None
    promoted: float | None = None
    first_write: float | None = None
    #: Median latency of the probe's write just before the fault: the same-run baseline
    #: the outage is compared with.
    normal_write: float | None = None
    error: str | None = None

    def since_start(self, at: float | None) -> str:
        return "-" if at is None else f"{at - self.started:.2f}s"

    @property
    def kill_to_write(self) -> float | None:
        if self.killed is None or self.first_write is None:
            return None
        return self.first_write - self.killed

    def describe(self) -> str:
        if self.killed is None:
            return f"the primary was never killed ({self.error or 'the run ended first'})"
        text = (f"WAL senders frozen at {self.since_start(self.stalled)}, primary SIGKILLed "
                f"at {self.since_start(self.killed)}")
        if self.promoted is not None:
            text += f", standby promoted {self.promoted - self.killed:.2f}s after the kill"
        if self.kill_to_write is not None:
            text += (f", first successful write through the service "
                     f"{self.kill_to_write:.2f}s after the kill")
            if self.promoted is not None and self.first_write is not None:
                text += f", {self.first_write - self.promoted:.2f}s after the promotion"
            if self.normal_write:
                text += (f" ({self.kill_to_write / self.normal_write:.0f}x a write before the "
                         f"fault, {self.normal_write * 1000:.0f} ms)")
        if self.error:
            text += f" (error: {self.error})"
        return text


async def run_failover(pair: PgFailoverPair, client: RaceClient, *, after: float,
                       lag: float, timings: FailoverTimings, give_up: float = 120.0,
                       healed: Callable[[FailoverTimings], None] | None = None) -> None:
    """The fault itself; records into ``timings`` (also when cancelled half-way) and calls
    ``healed`` once a write succeeded after the promotion (the fault log's entry)."""
    await asyncio.sleep(after)
    timings.begun = True
    try:
        timings.normal_write = await _normal_write(client)
        await pair.stall_replication()
        timings.stalled = time.monotonic()
        await asyncio.sleep(lag)
        timings.killed = await pair.kill_primary()
        probe = asyncio.create_task(_first_write(client, timings.killed + give_up))
        timings.promoted = await pair.promote()
        timings.first_write = await probe
        if healed is not None and timings.first_write is not None:
            healed(timings)
    except Exception as exc:
        timings.error = f"{type(exc).__name__}: {exc}"


async def _probe_write(client: RaceClient) -> int:
    reply = await client.request(
        "POST", "/api/admin/users", key=new_key(), retry=False,
        json_body={"email": f"{PROBE_MARK.decode()}{uuid.uuid4().hex[:12]}@race.invalid"},
    )
    return reply.status


async def _normal_write(client: RaceClient, samples: int = 3) -> float | None:
    """Median time of the probe's write while the primary is healthy (under the storm)."""
    took = []
    for _ in range(samples):
        started = time.monotonic()
        if await _probe_write(client) == 201:
            took.append(time.monotonic() - started)
    return statistics.median(took) if took else None


async def _first_write(client: RaceClient, deadline: float) -> float | None:
    """Write through the service until one write succeeds; the time it was answered."""
    while time.monotonic() < deadline:
        if await _probe_write(client) == 201:
            return time.monotonic()
        await asyncio.sleep(PROBE_INTERVAL)
    return None


async def _instances_follow(client: RaceClient, port: int) -> Invariant:
    """Every instance's ``/healthz`` names the promoted server and says it is writable."""
    deadline = time.monotonic() + FOLLOW_TIMEOUT
    seen: dict[str, tuple[object, object]] = {}
    while True:
        seen = {}
        for url in client.base_urls:
            reply = await client.request("GET", f"{url}/healthz", retry=False)
            body = reply.body if isinstance(reply.body, dict) else {}
            seen[url] = (body.get("database_server"), body.get("database_writable"))
        if all(v == (f"127.0.0.1:{port}", True) for v in seen.values()):
            break
        if time.monotonic() >= deadline:
            break
        await asyncio.sleep(0.5)
    held = all(v == (f"127.0.0.1:{port}", True) for v in seen.values())
    shown = ", ".join(f"{u} -> {s}, writable={w}" for u, (s, w) in seen.items())
    return Invariant("every instance writes to the promoted server", held, shown)


async def failover_result(pair: PgFailoverPair, client: RaceClient,
                          timings: FailoverTimings, audit: Invariant) -> ScenarioResult:
    """The ``failover`` row of the report (see the module docstring)."""
    done = timings.promoted is not None and timings.error is None
    acks = client.acks or []
    storm = [a for a in acks if PROBE_MARK not in (a.request or b"")]
    before = sum(1 for a in storm if timings.killed is not None and a.at < timings.killed)
    after = sum(1 for a in storm if timings.promoted is not None and a.at > timings.promoted)
    # Mid-run: the service acknowledged writes both before the kill and after promotion.
    invariants = [Invariant(
        "primary killed mid-run, standby promoted", done and before > 0 and after > 0,
        f"{timings.describe()}; {before} writes acknowledged before the kill, {after} "
        "after the promotion")]
    wrote = timings.kill_to_write
    invariants.append(Invariant(
        "a write succeeded after the promotion", wrote is not None,
        f"{wrote:.2f}s from the kill to the first successful write" if wrote is not None
        else "no write succeeded"))
    if done:
        checked = await check_acks(pair.server_url(pair.standby_port), acks)
        invariants.append(checked.invariant())
        invariants.append(await _instances_follow(client, pair.standby_port))
    invariants.append(audit)
    status = (ScenarioStatus.PASSED if all(i.held for i in invariants)
              else ScenarioStatus.BROKEN)
    return ScenarioResult("failover", status, invariants)
