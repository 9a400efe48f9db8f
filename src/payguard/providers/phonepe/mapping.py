"""PhonePe order status -> :class:`ProviderSession`.

PhonePe has no hosted "session" object: the merchant order (our purchase id) is the unit,
with states ``PENDING``, ``COMPLETED`` and ``FAILED`` (an order that expires unpaid turns
``FAILED``). It maps onto the port's session as: ``COMPLETED`` -> complete/paid,
``FAILED`` -> expired/unpaid with ``failed`` set (unless it failed by expiring),
``PENDING`` -> open/unpaid.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from payguard.providers.base import ProviderSession

__all__ = ["CURRENCY", "merchant_id_from_key", "session_from_order"]

CURRENCY = "INR"  # PhonePe settles in rupees; amounts are paise


def merchant_id_from_key(idempotency_key: str) -> str:
    """A merchant order/refund id from our derived key ``payguard:{purchase}:{step}``:
    PhonePe ids allow letters, digits, ``_`` and ``-`` (at most 63)."""
    cleaned = "".join(c if c.isalnum() or c in "_-" else "-" for c in idempotency_key)
    return cleaned[-63:]


def _when(ms: Any, default: datetime) -> datetime:
    try:
        return datetime.fromtimestamp(int(ms) / 1000, UTC)
    except (TypeError, ValueError):
        return default


def session_from_order(merchant_order_id: str, order: dict[str, Any], *,
                       url: str | None = None,
                       expires_at: datetime | None = None) -> ProviderSession:
    """Map an order (pay response or order status, camelCase JSON as PhonePe sends it)."""
    state = str(order.get("state") or "PENDING").upper()
    now = datetime.now(UTC)
    meta = {"phonepe_order_id": str(order.get("orderId") or ""), "phonepe_state": state}
    if order.get("errorCode"):
        meta["phonepe_error"] = str(order["errorCode"])
    expires = _when(order.get("expireAt"), expires_at or now)
    details = order.get("paymentDetails") or []
    mode = str(details[-1].get("paymentMode") or "") if details else ""
    return ProviderSession(
        id=merchant_order_id,
        url=url,
        status="complete" if state == "COMPLETED" else ("expired" if state == "FAILED" else "open"),
        payment_status="paid" if state == "COMPLETED" else "unpaid",
        amount_total=int(order.get("amount") or 0),
        currency=CURRENCY,
        expires_at=expires,
        # A refund names the original merchant order, so that is the payment reference.
        payment_intent=merchant_order_id,
        card_brand=(mode.lower() or None) if state == "COMPLETED" else None,
        metadata=meta,
        client_reference_id=merchant_order_id,
        # An order that failed by running out its time is an expiry, not a decline.
        failed=state == "FAILED" and expires > now,
    )
