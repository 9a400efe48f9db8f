"""The harness must fail a naive app: duplicate receipts and lost money, exit status 1."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from payguard.cli.main import app
from payguard.race import RaceConfig, ScenarioStatus, run_race_async
from tests.race.conftest import LiveApp


def _broken(report_result: object) -> dict[str, str]:
    from payguard.race.types import ScenarioResult

    assert isinstance(report_result, ScenarioResult)
    return {i.name: i.evidence for i in report_result.invariants if not i.held}


async def test_harness_catches_duplicate_receipts_and_lost_money(broken_app: LiveApp) -> None:
    config = RaceConfig(
        scenarios=["receipts", "wallet", "class-rep"], url=broken_app.url,
        admin_token=broken_app.admin_token, requests=40, concurrency=40, progress=False,
    )
    report = await run_race_async(config)
    results = {r.name: r for r in report.results}

    assert report.exit_code == 1
    receipts = results["receipts"]
    assert receipts.status is ScenarioStatus.BROKEN
    broken = _broken(receipts)
    assert "receipt numbers unique" in broken, broken
    assert "duplicate receipts" in broken["receipt numbers unique"]
    assert "wallets debited exactly" in broken  # read-modify-write loses debits here too

    wallet = results["wallet"]
    assert wallet.status is ScenarioStatus.BROKEN
    broken = _broken(wallet)
    assert set(broken) >= {"winners = balance / price", "final balance exact"}, broken
    assert "never left the wallet" in broken["final balance exact"]

    # The app's own audit claims all is well; the harness reports it held, yet fails the run.
    audit = [i for i in wallet.invariants if i.name == "server audit ok"]
    assert audit and audit[0].held

    # Checkout routes do not exist there: skipped, never passed.
    assert results["class-rep"].status is ScenarioStatus.SKIPPED
    assert "POST /api/checkout/sessions" in results["class-rep"].reason


@pytest.mark.parametrize("broken_app", [False], ids=["no-openapi"], indirect=True)
async def test_missing_routes_found_without_openapi(broken_app: LiveApp) -> None:
    report = await run_race_async(RaceConfig(
        scenarios=["class-rep", "stock", "receipts"], url=broken_app.url,
        admin_token=broken_app.admin_token, sizes={"receipts": 20}, progress=False,
    ))
    results = {r.name: r for r in report.results}
    # class-rep fails at its first call (POST /api/admin/programs: 404 without a problem
    # code); stock after racing purchases, at GET /api/products/{id} (404 likewise).
    assert results["class-rep"].status is ScenarioStatus.SKIPPED
    assert "/api/admin/programs" in results["class-rep"].reason
    assert results["stock"].status is ScenarioStatus.SKIPPED
    assert results["receipts"].status is ScenarioStatus.BROKEN


def test_cli_exits_1_and_writes_json(broken_app: LiveApp, tmp_path: Path) -> None:
    out = tmp_path / "race.json"
    result = CliRunner().invoke(app, [
        "race", "wallet", "--url", broken_app.url, "--admin-token", broken_app.admin_token,
        "--requests", "20", "--no-progress", "--json", str(out),
    ])
    assert result.exit_code == 1, result.output
    assert "BROKEN" in result.output
    assert "final balance exact" in result.output
    data = json.loads(out.read_text())
    assert data["ok"] is False
    [wallet] = data["scenarios"]
    assert wallet["status"] == "broken"
    assert wallet["stats"]["requests"] == 20
    assert {"winners = balance / price", "final balance exact"} <= {
        i["name"] for i in wallet["invariants"] if not i["held"]
    }


def test_cli_refuses_without_a_target() -> None:
    result = CliRunner().invoke(app, ["race", "receipts", "--no-progress"])
    assert result.exit_code == 2
