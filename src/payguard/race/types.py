"""Plain data the harness passes around: configuration, samples, invariants, results."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "Invariant",
    "RaceConfig",
    "RaceReport",
    "Sample",
    "ScenarioResult",
    "ScenarioStatus",
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


@dataclass(frozen=True)
class Sample:
    """The final outcome of one logical request (after its own retries)."""

    op: str
    status: int  # 0 when the request never got an HTTP answer
    code: str | None
    latency: float  # seconds, first attempt to final answer
    attempts: int = 1


@dataclass(frozen=True)
class Invariant:
    name: str
    held: bool
    evidence: str


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

    @property
    def broken(self) -> list[Invariant]:
        return [inv for inv in self.invariants if not inv.held]

    def to_dict(self) -> dict[str, Any]:
        from payguard.race.stats import summarize

        return {
            "name": self.name,
            "status": self.status.value,
            "reason": self.reason,
            "invariants": [
                {"name": i.name, "held": i.held, "evidence": i.evidence} for i in self.invariants
            ],
            "stats": summarize(self.samples, self.duration).to_dict(),
        }


@dataclass
class RaceReport:
    target: str
    results: list[ScenarioResult] = field(default_factory=list)
    faults: list[str] = field(default_factory=list)  # e.g. "killed instance 1 at 2.3s"

    @property
    def ok(self) -> bool:
        """No invariant broke and no scenario errored (skips are not failures)."""
        return all(
            r.status in (ScenarioStatus.PASSED, ScenarioStatus.SKIPPED) for r in self.results
        )

    @property
    def exit_code(self) -> int:
        return 0 if self.ok else 1

    def to_dict(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "ok": self.ok,
            "faults": self.faults,
            "scenarios": [r.to_dict() for r in self.results],
        }
