"""``payguard sim``: run the simulated provider on its own, e.g. next to several servers."""

from __future__ import annotations

from typing import Annotated

import typer
import uvicorn

from payguard.config import load_settings
from payguard.providers.simulator import create_simulator_app

__all__ = ["sim"]


def sim(
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 12111,
    host: Annotated[str, typer.Option(help="Interface to bind.")] = "127.0.0.1",
) -> None:
    """Run the Stripe-compatible simulator. Point PAYGUARD_STRIPE_API_BASE at it."""
    settings = load_settings()
    app = create_simulator_app(settings)
    typer.echo(f"simulated provider on http://{host}:{port} "
               f"(state in {settings.data_dir / 'simulator.db'}, webhooks to "
               f"{app.state.simulator.options.webhook.url})")
    uvicorn.run(app, host=host, port=port, log_level="info")
