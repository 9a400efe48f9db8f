"""The scenario registry: importing this package registers every scenario."""

from __future__ import annotations

from payguard.race.scenarios import (  # noqa: F401 - imported to register
    checkout_idempotency,
    class_rep,
    double_click,
    mixed,
    receipts,
    refund,
    replay,
    stock,
    wallet,
    webhook_storm,
)
from payguard.race.scenarios.base import REGISTRY, Context, Scenario

__all__ = ["ORDER", "REGISTRY", "Context", "Scenario"]

#: The order of a full run: the foundation first, checkout and webhooks next, all at once last.
ORDER: tuple[str, ...] = (
    "receipts", "wallet", "stock", "refund", "replay", "class-rep",
    "checkout-idempotency", "double-click", "webhook-storm", "mixed",
)
assert set(ORDER) == set(REGISTRY), "every registered scenario has a place in ORDER"
