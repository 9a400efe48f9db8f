"""``payguard reconcile``: one reconciler run from the command line (cron, an operator)."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from payguard.bootstrap import app_context
from payguard.config import load_settings
from payguard.logs import configure_logging
from payguard.service.reconcile import reconcile as run_reconcile

__all__ = ["reconcile"]


async def _run(older_than: float | None) -> dict[str, Any]:
    # The same context as a server process: same database, lock service (so this run and
    # the servers' loops exclude each other) and provider.
    async with app_context(load_settings()) as ctx:
        return await run_reconcile(ctx, older_than=older_than)


def reconcile(
    older_than: Annotated[float | None, typer.Option(
        min=0, help="Seconds a purchase may stay pending (default PAYGUARD_STUCK_AFTER).")
    ] = None,
) -> None:
    """Finish stuck purchases, release expired holds, repair dead keys, retry the outbox."""
    configure_logging()
    result = asyncio.run(_run(older_than))
    console = Console()
    if result.get("skipped"):
        console.print("[yellow]skipped:[/] another reconciler run holds the lock")
        return
    table = Table(title="payguard reconcile")
    table.add_column("action")
    table.add_column("count", justify="right")
    for key, value in result.items():
        if key != "skipped":
            table.add_row(key, str(value))
    console.print(table)
    if result.get("errors"):
        raise typer.Exit(1)
