"""``payguard sim``: run the simulated provider on its own, e.g. next to several servers."""

from __future__ import annotations

import typer
import uvicorn

from payguard.config import load_settings
from payguard.providers.simulator import create_simulator_app

__all__ = ["sim"]


def sim(
    port: int = typer.Option(12111, help="Port to listen on."),
    host: str = typer.Option("127.0.0.1", help="Interface to bind."),
) -> None:
    """Run the Stripe-compatible simulator. Point PAYGUARD_STRIPE_API_BASE at it."""
    settings = load_settings()
    app = create_simulator_app(settings)
    typer.echo(f"simulated provider on http://{host}:{port} "
               f"(state in {settings.data_dir / 'simulator.db'}, webhooks to "
               f"{app.state.simulator.options.webhook.url})")
    uvicorn.run(app, host=host, port=port, log_level="info")
