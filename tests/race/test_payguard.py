"""Every scenario against real payguard: SQLite (one process), PostgreSQL (3 instances).

Small sizes keep CI fast; ``PAYGUARD_RACE_SCALE=10`` runs them ten times larger.
"""

from __future__ import annotations

import os

from payguard.race import RaceConfig, RaceReport, ScenarioStatus, run_race_async

SCALE = float(os.environ.get("PAYGUARD_RACE_SCALE", "1"))
SIZES = {
    "receipts": 60, "wallet": 40, "stock": 15, "refund": 10, "replay": 10, "class-rep": 15,
    "checkout-idempotency": 6, "double-click": 10, "webhook-storm": 4, "mixed": 80,
}
#: payguard offers every endpoint the scenarios use: none may be skipped.
MUST_RUN = set(SIZES)


def _sizes() -> dict[str, int]:
    return {name: max(1, round(n * SCALE)) for name, n in SIZES.items()}


def _assert_all_held(report: RaceReport) -> None:
    problems = [
        f"{r.name}: {r.status.value} {r.reason} "
        + "; ".join(f"{i.name}: {i.evidence}" for i in r.broken)
        for r in report.results
        if r.status not in (ScenarioStatus.PASSED, ScenarioStatus.SKIPPED)
    ]
    assert not problems, "\n".join(problems)
    statuses = {r.name: r.status for r in report.results}
    assert set(statuses) == set(SIZES)
    assert all(statuses[n] is ScenarioStatus.PASSED for n in MUST_RUN), statuses
    for r in report.results:
        assert r.samples and r.invariants, r.name
    assert report.ok and report.exit_code == 0


async def test_every_scenario_holds_on_sqlite() -> None:
    report = await run_race_async(RaceConfig(spawn=True, sizes=_sizes(), progress=False,
                                             concurrency=40))
    _assert_all_held(report)


async def test_every_scenario_holds_on_postgresql_with_three_instances(
    pg_url: str, redis_url: str,
) -> None:
    report = await run_race_async(RaceConfig(
        spawn=True, instances=3, database_url=pg_url, redis_url=redis_url, sizes=_sizes(),
        progress=False, concurrency=40,
    ))
    assert "3 instance(s) on PostgreSQL + Redis locks" in report.target
    _assert_all_held(report)


async def test_invariants_hold_while_instances_are_killed(pg_url: str) -> None:
    # Two instances on PostgreSQL, one SIGKILLed and restarted every second: retries with
    # their own idempotency keys must finish every request, and nothing may apply twice.
    report = await run_race_async(RaceConfig(
        scenarios=["receipts", "wallet", "refund"], spawn=True, instances=2,
        database_url=pg_url, sizes={"receipts": 60, "wallet": 40, "refund": 10},
        kill_every=1.0, progress=False, concurrency=20, seed=7,
    ))
    assert report.faults, "no instance was killed during the run"
    problems = {r.name: [f"{i.name}: {i.evidence}" for i in r.broken] or r.reason
                for r in report.results if r.status is not ScenarioStatus.PASSED}
    assert not problems, (problems, report.faults)


async def test_checkout_scenarios_hold_with_phonepe_on_sqlite() -> None:
    """``payguard race --provider phonepe``: the checkout scenarios through simulated PhonePe
    (the storm delivers each callback 5 times, shuffled, with PhonePe's Authorization)."""
    names = ["class-rep", "checkout-idempotency", "double-click", "webhook-storm"]
    report = await run_race_async(RaceConfig(
        spawn=True, provider="phonepe", scenarios=names, sizes=_sizes(), progress=False,
        concurrency=40,
    ))
    statuses = {r.name: r.status for r in report.results}
    assert statuses == dict.fromkeys(names, ScenarioStatus.PASSED), [
        (r.name, r.reason, [(i.name, i.evidence) for i in r.broken]) for r in report.results]
    storm = next(r for r in report.results if r.name == "webhook-storm")
    assert any(i.name == "each event id applied once" and i.held for i in storm.invariants)
    assert report.exit_code == 0
