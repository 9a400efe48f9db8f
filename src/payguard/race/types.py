"""Plain data the harness passes around: configuration, samples, invariants, results."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "TRANSIENT_CODES",
    "FaultEvent",
    "Invariant",
    "Liveness",
    "RaceConfig",
    "RaceReport",
    "Sample",
    "ScenarioResult",
    "ScenarioStatus",
    "is_transient",
    "recovery_summary",
]


@dataclass
class RaceConfig:
    """Everything one ``payguard race`` run needs.

    ``url``/``admin_token`` target a running server; ``spawn`` starts one (or
    ``instances`` of them) instead. ``requests`` and ``concurrency`` scale every scenario;
    ``None`` means each scenario's own default.
    """

    scenarios: list[str] = field(default_factory=list)
    url: str | None = None
    admin_token: str | None = None
    spawn: bool = False
    instances: int = 1
    database_url: str | None = None
    redis_url: str | None = None
    concurrency: int = 50
    requests: int | None = None
    #: Per-scenario sizes, overriding ``requests`` (tests keep CI runs small with it).
    sizes: dict[str, int] = field(default_factory=dict)
    json_path: Path | None = None
    webhook_secret: str | None = None
    sim_url: str | None = None
    #: The payment provider the (spawned or given) service checks out through: ``stripe``
    #: or ``phonepe`` (spawned servers then run the PhonePe simulator, in INR).
    provider: str = "stripe"
    #: Faults injected while the scenarios run: fault name -> seconds between injections
    #: (``payguard.race.faults.FAULTS`` declares the names). ``kill_every`` is ``"kill"``.
    faults: dict[str, float] = field(default_factory=dict)
    kill_every: float | None = None
    #: With ``spawn``: build a PostgreSQL primary + synchronous standby, kill the primary
    #: this many seconds into the run, promote the standby (``payguard.race.failover``).
    failover_after: float | None = None
    #: Seconds the standby is cut off (WAL senders frozen) right before the kill.
    failover_lag: float = 1.0
    #: synchronous_commit of the spawned servers and the primary (``off`` on purpose
    #: shows the check catching lost acknowledged writes).
    synchronous_commit: str = "on"
    provider_failure_rate: float = 0.0
    duplicate_deliveries: int = 5
    timeout: float = 30.0
    progress: bool = True
    seed: int | None = None
    # Extra environment for spawned servers (tests use it for PAYGUARD_* knobs).
    server_env: dict[str, str] = field(default_factory=dict)
    #: Seconds one logical request keeps retrying (connection errors, 5xx, transient 409s)
    #: before the harness records it as unfinished: a liveness failure.
    retry_for: float = 120.0
    #: Seconds to wait after a scenario's storm for the service to converge (no key in
    #: progress, no lock held, no checkout without its session) before checking final state.
    converge_within: float = 60.0

    def __post_init__(self) -> None:
        if self.kill_every:
            self.faults.setdefault("kill", self.kill_every)


@dataclass(frozen=True)
class Sample:
    """The final outcome of one logical request (after its own retries)."""

    op: str
    status: int  # 0 when the request never got an HTTP answer
    code: str | None
    latency: float  # seconds, first attempt to final answer
    attempts: int = 1
    #: ``time.monotonic()`` of the final answer (liveness: time since the last fault).
    ended_at: float = 0.0

    @property
    def finished(self) -> bool:
        """A final answer: not a "try again" (no answer, 5xx, a transient 409)."""
        return not is_transient(self.status, self.code)


#: Answers that only say "try again": a request ending on one of them never finished.
TRANSIENT_CODES = frozenset({"REQUEST_IN_PROGRESS", "PAYMENT_IN_PROGRESS"})


def is_transient(status: int, code: str | None) -> bool:
    return status == 0 or status >= 500 or (status == 409 and code in TRANSIENT_CODES)


@dataclass(frozen=True)
class Invariant:
    name: str
    held: bool
    evidence: str
    #: ``safety``: nothing wrong ever happened (money, seats, receipts, sessions);
    #: ``liveness``: everything finished, within the reported time.
    kind: str = "safety"


@dataclass(frozen=True)
class FaultEvent:
    """One injected fault: what, when (seconds since the run started), healed when."""

    fault: str
    at: float
    healed_at: float
    detail: str

    def __str__(self) -> str:
        return f"{self.detail} at {self.at:.1f}s, healed after {self.healed_at - self.at:.1f}s"


@dataclass
class Liveness:
    """How a scenario converged after its faults."""

    unfinished: int = 0  # requests that never got a final answer
    converged: bool = True  # the service reached a quiet state after the storm
    converge_detail: str = ""
    #: Seconds from the last fault before each fault-affected request's final answer.
    recovery: list[float] = field(default_factory=list)
    #: Seconds from the last fault of the scenario to the service's convergence.
    settle: float | None = None


class ScenarioStatus(enum.StrEnum):
    PASSED = "passed"
    BROKEN = "broken"  # at least one invariant did not hold
    SKIPPED = "skipped"  # the server does not offer the endpoints
    ERROR = "error"  # the harness could not run the scenario (setup failed, ...)


@dataclass
class ScenarioResult:
    name: str
    status: ScenarioStatus
    invariants: list[Invariant] = field(default_factory=list)
    samples: list[Sample] = field(default_factory=list)
    duration: float = 0.0  # seconds spent firing (the measured part)
    reason: str = ""  # why skipped / errored
    #: Receipt numbers observed while firing (``mixed`` checks them across scenarios).
    receipts: list[str] = field(default_factory=list)
    liveness: Liveness = field(default_factory=Liveness)

    @property
    def broken(self) -> list[Invariant]:
        return [inv for inv in self.invariants if not inv.held]

    @property
    def safety_held(self) -> bool:
        return all(i.held for i in self.invariants if i.kind == "safety")

    @property
    def liveness_held(self) -> bool:
        return all(i.held for i in self.invariants if i.kind == "liveness")

    def to_dict(self) -> dict[str, Any]:
        from payguard.race.stats import summarize

        return {
            "name": self.name,
            "status": self.status.value,
            "reason": self.reason,
            "invariants": [
                {"name": i.name, "held": i.held, "evidence": i.evidence, "kind": i.kind}
                for i in self.invariants
            ],
            "safety": self.safety_held,
            "liveness": {
                "held": self.liveness_held, "unfinished": self.liveness.unfinished,
                "converged": self.liveness.converged, "detail": self.liveness.converge_detail,
                "recovery_s": recovery_summary(self.liveness.recovery),
                "settle_s": self.liveness.settle,
            },
            "stats": summarize(self.samples, self.duration).to_dict(),
        }


@dataclass
class RaceReport:
    target: str
    results: list[ScenarioResult] = field(default_factory=list)
    faults: list[FaultEvent] = field(default_factory=list)
    fault_errors: list[str] = field(default_factory=list)  # injections that failed
    notes: list[str] = field(default_factory=list)  # e.g. the failover's timeline

    def recovery(self) -> list[float]:
        """Every fault-affected request's time from the last fault to its final answer."""
        return [t for r in self.results for t in r.liveness.recovery]

    def settles(self) -> list[float]:
        """Per scenario: time from the last fault to the service's convergence."""
        return [r.liveness.settle for r in self.results if r.liveness.settle is not None]

    @property
    def ok(self) -> bool:
        """No invariant broke and no scenario errored (skips are not failures)."""
        return not self.fault_errors and all(
            r.status in (ScenarioStatus.PASSED, ScenarioStatus.SKIPPED) for r in self.results
        )

    @property
    def exit_code(self) -> int:
        return 0 if self.ok else 1

    def to_dict(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "ok": self.ok,
            "faults": [str(f) for f in self.faults],
            "fault_errors": self.fault_errors,
            "notes": self.notes,
            "recovery_s": recovery_summary(self.recovery()),
            "settle_s": recovery_summary(self.settles()),
            "scenarios": [r.to_dict() for r in self.results],
        }


def recovery_summary(values: list[float]) -> dict[str, float] | None:
    """max and p99 (nearest rank) of recovery times, in seconds; None without any."""
    if not values:
        return None
    from payguard.race.stats import percentile

    return {"max": round(max(values), 2), "p99": round(percentile(values, 99), 2),
            "n": len(values)}
