"""``payguard``: serve, migrate, sim, reconcile, race."""

from __future__ import annotations

import asyncio
import os
from typing import Annotated

import typer
from rich.console import Console

from payguard.cli.race_cmd import race
from payguard.cli.reconcile_cmd import reconcile
from payguard.cli.sim_cmd import sim
from payguard.config import Settings
from payguard.locks import choose_backend
from payguard.private_files import restrict_umask

__all__ = ["app"]

app = typer.Typer(no_args_is_help=True, add_completion=False,
                  help="Race-free payments: the payguard service and its tools.")
console = Console(soft_wrap=True)


@app.callback()
def _private_files() -> None:
    """Race-free payments: the payguard service and its tools."""
    # Before any command creates a file: data dir, databases, tokens are owner-only.
    restrict_umask()


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Interface to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
    workers: Annotated[int, typer.Option(
        min=1, help="Worker processes (default 1, chosen from a measurement: "
                    "bench/README.md).")] = 1,
    demo: Annotated[bool, typer.Option(help="Create demo data and print its tokens.")] = False,
) -> None:
    """Run the payment service (migrates the database first)."""
    import uvicorn

    from payguard.logs import configure_logging
    from payguard.store.migrate import migrate

    os.environ.setdefault("PAYGUARD_PUBLIC_URL", f"http://{host}:{port}")
    os.environ["PAYGUARD_WORKERS"] = str(workers)
    settings = Settings()
    check_production(settings)
    check_lock_backend(settings, workers)
    token_was_configured = bool(settings.admin_token)
    token = settings.ensure_admin_token()
    os.environ["PAYGUARD_ADMIN_TOKEN"] = token
    asyncio.run(migrate(settings.resolved_database_url))
    configure_logging()
    console.print(f"[bold]payguard[/] on http://{host}:{port}  database: "
                  f"{settings.resolved_database_url.split('@')[-1]}")
    if not token_was_configured:
        console.print(f"admin token: [cyan]{token}[/] (kept in {settings.data_dir}/admin_token)")
    if demo:
        from payguard.cli.demo import ensure_demo_data

        data = asyncio.run(ensure_demo_data(settings))
        base = f"http://{host}:{port}"
        user_token = data["user"]["token"]
        console.print(f"demo user: {data['user']['email']}  token: [cyan]{user_token}[/]")
        console.print(f"  try: curl -H 'Authorization: Bearer {user_token}' {base}/api/wallet")
        console.print(f"  products: {base}/api/products   dashboard: {base}/")
    metrics_dir = None
    if workers > 1 and not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        # prometheus_client multi-process mode: each worker writes its values to files
        # here and /metrics merges them. Fresh per run, so no stale counts carry over.
        import tempfile

        metrics_dir = tempfile.mkdtemp(prefix="payguard-metrics-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
    try:
        uvicorn.run("payguard.api.app:create_app_from_env", factory=True, host=host,
                    port=port, workers=workers, loop="uvloop", http="httptools",
                    log_level="warning", access_log=False, timeout_keep_alive=30)
    finally:
        if metrics_dir is not None:
            import shutil

            shutil.rmtree(metrics_dir, ignore_errors=True)


def check_production(settings: Settings) -> None:
    """Refuse to take real payments with the public development secrets."""
    problems = settings.production_problems()
    if problems:
        console.print("[red]error:[/] refusing to start with "
                      f"PAYGUARD_PROVIDER={settings.provider}:")
        for problem in problems:
            console.print(f"  - {problem}")
        raise typer.Exit(2)


def check_lock_backend(settings: Settings, workers: int) -> None:
    """Refuse an in-process lock backend when several processes would share the data."""
    try:
        choose_backend(settings, workers)
    except Exception as exc:
        console.print(f"[red]error:[/] {exc}")
        raise typer.Exit(2) from exc


@app.command()
def migrate() -> None:
    """Apply database migrations."""
    from payguard.store.migrate import migrate as run_migrate

    settings = Settings()
    asyncio.run(run_migrate(settings.resolved_database_url))
    console.print("database is at the newest schema")


app.command(help="Run the Stripe- or PhonePe-compatible simulator standalone.")(sim)
app.command(help="Run the reconciler once.")(reconcile)
app.command(help="Race concurrent requests against a service and prove invariants.")(race)
