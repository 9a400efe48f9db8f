"""``payguard race``: the concurrency proof harness on the command line."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

__all__ = ["race"]


def race(
    scenarios: Annotated[
        list[str] | None,
        typer.Argument(help="Scenarios to run (default: all): receipts, wallet, stock, refund, "
                            "replay, class-rep, checkout-idempotency, double-click, "
                            "webhook-storm, mixed."),
    ] = None,
    url: Annotated[str | None, typer.Option(
        help="Base URL of a running service (comma-separated for several instances).")] = None,
    admin_token: Annotated[str | None, typer.Option(
        envvar="PAYGUARD_ADMIN_TOKEN", help="Admin token of the service at --url.")] = None,
    spawn: Annotated[bool, typer.Option(
        "--spawn", help="Start the service(s) in a temp dir and stop them afterwards.")] = False,
    instances: Annotated[int, typer.Option(
        min=1, help="Serve processes to spawn (several need --database-url postgresql://).")] = 1,
    database_url: Annotated[str | None, typer.Option(
        help="Database for spawned servers (default: SQLite in a temp dir).")] = None,
    concurrency: Annotated[int, typer.Option(min=1, help="Requests in flight at most.")] = 50,
    requests: Annotated[int | None, typer.Option(
        min=1, help="Size of every scenario (default: each scenario's own).")] = None,
    json_path: Annotated[Path | None, typer.Option(
        "--json", help="Also write the report as JSON to this file.")] = None,
    webhook_secret: Annotated[str | None, typer.Option(
        envvar="PAYGUARD_STRIPE_WEBHOOK_SECRET",
        help="Webhook secret of the service at --url, to sign the storm's own deliveries.")] = None,
    sim_url: Annotated[str | None, typer.Option(
        help="Simulator base URL for --url (default: URL/sim, or URL/sim/phonepe).")] = None,
    provider: Annotated[str, typer.Option(
        help="stripe or phonepe: the simulated provider the checkout scenarios pay through "
             "(with --spawn, servers run that simulator; PhonePe in INR).")] = "stripe",
    kill_every: Annotated[float | None, typer.Option(
        min=0.5, help="With --spawn: SIGKILL and restart a random instance every N seconds.")]
    = None,
    failover_after: Annotated[float | None, typer.Option(
        min=0.0, help="With --spawn: build a PostgreSQL primary and a synchronous standby, "
                      "SIGKILL the primary N seconds in, promote the standby, then check that "
                      "every write answered 2xx is on it exactly once.")] = None,
    failover_lag: Annotated[float, typer.Option(
        min=0.0, help="Seconds the standby is cut off (WAL senders frozen) before the kill.")]
    = 1.0,
    synchronous_commit: Annotated[str, typer.Option(
        help="With --failover-after: synchronous_commit of the primary and the instances "
             "(on, remote_apply; 'off' on purpose shows the check catching lost writes).")]
    = "on",
    restart_redis_every: Annotated[float | None, typer.Option(
        min=0.5, help="With --spawn: run the locks on a Redis the harness starts, and "
                      "SIGKILL/restart it every N seconds (all its state lost).")] = None,
    terminate_pg_every: Annotated[float | None, typer.Option(
        min=0.5, help="With --spawn and PostgreSQL: pg_terminate_backend every connection of "
                      "the service's database every N seconds.")] = None,
    provider_timeout_every: Annotated[float | None, typer.Option(
        min=0.5, help="With --spawn: every N seconds the provider answers after payguard's "
                      "provider timeout, for one second.")] = None,
    retry_for: Annotated[float, typer.Option(
        min=1, help="Seconds one request keeps retrying before it counts as unfinished.")]
    = 120.0,
    converge_within: Annotated[float, typer.Option(
        min=1, help="Seconds to wait after each storm for nothing to be in flight.")] = 60.0,
    provider_failure_rate: Annotated[float, typer.Option(
        min=0.0, max=1.0, help="With --spawn: simulator failure rate.")] = 0.0,
    duplicate_deliveries: Annotated[int, typer.Option(
        min=1, help="With --spawn: the simulator delivers every webhook this often.")] = 5,
    seed: Annotated[int | None, typer.Option(help="Random seed (shuffles, kill choice).")]
    = None,
    progress: Annotated[bool, typer.Option(help="Show the progress bar.")] = True,
) -> None:
    """Race concurrent requests against payguard and check its invariants; exit 1 if any broke."""
    from payguard.race import RaceConfig, run_race
    from payguard.race.report import render, write_json
    from payguard.race.spawner import SpawnFailed

    if spawn == bool(url):
        raise typer.BadParameter("give either --url (with --admin-token) or --spawn")
    if url and not admin_token:
        raise typer.BadParameter("--url needs --admin-token (or PAYGUARD_ADMIN_TOKEN)")
    if provider not in ("stripe", "phonepe"):
        raise typer.BadParameter("--provider must be stripe or phonepe")
    if failover_after is not None and (not spawn or database_url):
        raise typer.BadParameter("--failover-after needs --spawn and no --database-url: the "
                                 "harness builds its own primary and standby")
    if synchronous_commit not in ("on", "remote_apply", "remote_write", "local", "off"):
        raise typer.BadParameter("--synchronous-commit: on, remote_apply, remote_write, "
                                 "local or off")
    # One entry per fault of payguard.race.faults.FAULTS (checked there, with the config).
    faults = {name: every for name, every in (
        ("kill", kill_every), ("restart-redis", restart_redis_every),
        ("terminate-pg", terminate_pg_every), ("provider-timeout", provider_timeout_every),
    ) if every}
    config = RaceConfig(
        scenarios=list(scenarios or []), url=url, admin_token=admin_token, spawn=spawn,
        instances=instances, database_url=database_url,
        redis_url=os.environ.get("PAYGUARD_REDIS_URL") or None, concurrency=concurrency,
        requests=requests, json_path=json_path, webhook_secret=webhook_secret,
        sim_url=sim_url, provider=provider, faults=faults,
        failover_after=failover_after, failover_lag=failover_lag,
        synchronous_commit=synchronous_commit,
        provider_failure_rate=provider_failure_rate,
        retry_for=retry_for, converge_within=converge_within,
        duplicate_deliveries=duplicate_deliveries, seed=seed, progress=progress,
    )
    # Piped output (CI logs, README) gets a readable width instead of 80 columns.
    console = Console(width=None if sys.stdout.isatty() else 130)
    try:
        report = run_race(config)
    except (ValueError, SpawnFailed) as exc:
        console.print(f"[red]error:[/] {exc}")
        raise typer.Exit(2) from exc
    render(report, console)
    if json_path is not None:
        write_json(report, json_path)
    raise typer.Exit(report.exit_code)
