"""A local, stateful, Stripe-compatible subset for development, tests and load runs.

Outcomes of ``POST /checkout/{id}/pay`` (``{"outcome": ...}``):

- ``succeeded``: session ``complete``/``paid``; ``checkout.session.completed``.
- ``failed``: the card is declined. As on Stripe's hosted page the session stays ``open``
  (the customer may try again or let it expire); its payment intent is
  ``requires_payment_method`` with ``last_payment_error.code = card_declined``. Stripe
  sends no checkout-session event for this, only ``payment_intent.payment_failed``.
- ``async_succeeded``: ``checkout.session.completed`` with ``payment_status: unpaid``, then
  ``checkout.session.async_payment_succeeded`` (session now ``paid``).
- ``async_failed``: ``checkout.session.completed`` (``unpaid``), then
  ``checkout.session.async_payment_failed`` (stays ``unpaid``).
- Expiring a session (the endpoint, or reading it past ``expires_at``) sends
  ``checkout.session.expired``.

Differences from Stripe, on purpose: ``expires_at`` may be any future time up to 24 h
(Stripe wants at least 30 min) so tests can watch expiry; injected 500s
(``sim_failure_rate``) are never stored under an idempotency key; a concurrent request
with a key already being processed waits and then replays (Stripe answers 409).
"""

from payguard.providers.simulator.app import Simulator, SimulatorOptions, create_simulator_app
from payguard.providers.simulator.webhooks import WebhookPolicy, sign_payload

__all__ = ["Simulator", "SimulatorOptions", "WebhookPolicy", "create_simulator_app", "sign_payload"]
