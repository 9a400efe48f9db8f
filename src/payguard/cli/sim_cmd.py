"""``payguard sim``: run a simulated provider on its own, e.g. next to several servers."""

from __future__ import annotations

from typing import Annotated, Literal

import typer
import uvicorn

from payguard.config import load_settings
from payguard.providers.simulator import create_simulator_app

__all__ = ["sim"]


def sim(
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 12111,
    host: Annotated[str, typer.Option(help="Interface to bind.")] = "127.0.0.1",
    provider: Annotated[str, typer.Option(
        help="stripe (point PAYGUARD_STRIPE_API_BASE at it) or phonepe "
             "(point PAYGUARD_PHONEPE_API_BASE at it).")] = "stripe",
) -> None:
    """Run the Stripe- or PhonePe-compatible simulator."""
    settings = load_settings()
    kind: Literal["stripe", "phonepe"]
    if provider == "phonepe":
        kind = "phonepe"
    elif provider == "stripe":
        kind = "stripe"
    else:
        raise typer.BadParameter("--provider must be stripe or phonepe")
    if kind == "phonepe":
        from payguard.providers.phonepe.simulator import create_phonepe_simulator_app

        app = create_phonepe_simulator_app(settings)
        state = settings.data_dir / "phonepe_simulator.db"
        target = app.state.simulator.options.callback.url
    else:
        app = create_simulator_app(settings)
        state = settings.data_dir / "simulator.db"
        target = app.state.simulator.options.webhook.url
    typer.echo(f"simulated {kind} on http://{host}:{port} (state in {state}, callbacks to "
               f"{target})")
    uvicorn.run(app, host=host, port=port, log_level="info")
