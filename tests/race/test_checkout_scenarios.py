"""The checkout scenarios pass a correct checkout service and catch a naive one."""

from __future__ import annotations

from payguard.race import RaceConfig, ScenarioStatus, run_race_async
from tests.race.conftest import LiveApp

CHECKOUT = ["class-rep", "checkout-idempotency", "double-click", "webhook-storm"]


async def test_checkout_scenarios(checkout_app: tuple[LiveApp, bool]) -> None:
    live, naive = checkout_app
    report = await run_race_async(RaceConfig(
        scenarios=CHECKOUT, url=live.url, admin_token=live.admin_token,
        webhook_secret=live.webhook_secret, progress=False, concurrency=30,
        sizes={"webhook-storm": 4},
    ))
    results = {r.name: r for r in report.results}
    broken = {n: [i.name for i in r.broken] for n, r in results.items()}
    if not naive:
        assert report.ok, {n: (r.status, r.reason, [(i.name, i.evidence) for i in r.broken])
                           for n, r in results.items()}
        assert all(r.status is ScenarioStatus.PASSED for r in results.values())
        return
    assert report.exit_code == 1
    assert all(r.status is ScenarioStatus.BROKEN for r in results.values()), broken
    assert "first race: seats = limit" in broken["class-rep"]
    assert "each cancel applied once" in broken["class-rep"]
    assert "one session per key" in broken["checkout-idempotency"]
    assert "one session per user" in broken["double-click"]
    assert {"each topup credited exactly once", "each event id applied once"} <= set(
        broken["webhook-storm"])
