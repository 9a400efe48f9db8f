"""``payguard reconcile``: one reconciler run from the command line (cron, an operator)."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from payguard.config import load_settings

__all__ = ["reconcile"]


async def _run(older_than: float | None) -> dict[str, Any]:
    from payguard.api.app import build_context, close_context
    from payguard.service.reconcile import reconcile as run_reconcile

    # The same context as a server process: same database, lock service (so this run and
    # the servers' loops exclude each other) and provider.
    ctx = await build_context(load_settings())
    try:
        return await run_reconcile(ctx, older_than=older_than)
    finally:
        await close_context(ctx)


def reconcile(
    older_than: Annotated[float | None, typer.Option(
        min=0, help="Seconds a purchase may stay pending (default PAYGUARD_STUCK_AFTER).")
    ] = None,
) -> None:
    """Finish stuck purchases, release expired holds, repair dead keys, retry the outbox."""
    from payguard.api.logging import configure_logging

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
