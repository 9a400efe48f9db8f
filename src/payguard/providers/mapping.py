"""Stripe checkout-session JSON -> :class:`ProviderSession`.

One mapping for real Stripe and the simulator: the simulator returns the same shapes,
including expansion of ``payment_intent.latest_charge`` where the card details live.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, cast

from payguard.providers.base import PaymentStatus, ProviderSession, SessionStatus

__all__ = ["SESSION_EXPAND", "session_from_stripe"]

#: What to expand when reading a session so the card brand/last4 are included.
SESSION_EXPAND = ["payment_intent.latest_charge"]

_STATUSES = {"open", "complete", "expired"}
_PAYMENT_STATUSES = {"paid", "unpaid", "no_payment_required"}


def _obj(value: Any) -> Mapping[str, Any] | None:
    return value if isinstance(value, Mapping) else None


def _card(payment_intent: Any) -> tuple[str | None, str | None]:
    pi = _obj(payment_intent)
    charge = _obj(pi.get("latest_charge")) if pi else None
    details = _obj(charge.get("payment_method_details")) if charge else None
    card = _obj(details.get("card")) if details else None
    if card is None:
        return None, None
    brand, last4 = card.get("brand"), card.get("last4")
    return (str(brand) if brand else None, str(last4) if last4 else None)


def session_from_stripe(data: Mapping[str, Any]) -> ProviderSession:
    """Map a checkout session (a plain dict, possibly with expanded sub-objects)."""
    status = str(data["status"])
    payment_status = str(data["payment_status"])
    if status not in _STATUSES or payment_status not in _PAYMENT_STATUSES:
        raise ValueError(f"unexpected session state {status}/{payment_status}")
    raw_pi = data.get("payment_intent")
    pi_obj = _obj(raw_pi)
    payment_intent = str(pi_obj["id"]) if pi_obj else (str(raw_pi) if raw_pi else None)
    brand, last4 = _card(raw_pi)
    customer = _obj(data.get("customer_details")) or {}
    email = customer.get("email") or data.get("customer_email")
    metadata = {str(k): str(v) for k, v in (_obj(data.get("metadata")) or {}).items()}
    return ProviderSession(
        id=str(data["id"]),
        url=data.get("url"),
        status=cast(SessionStatus, status),
        payment_status=cast(PaymentStatus, payment_status),
        amount_total=int(data["amount_total"]),
        currency=str(data["currency"]).upper(),
        expires_at=datetime.fromtimestamp(int(data["expires_at"]), UTC),
        payment_intent=payment_intent,
        card_brand=brand,
        card_last4=last4,
        customer_name=customer.get("name"),
        customer_email=email,
        metadata=metadata,
        client_reference_id=data.get("client_reference_id"),
    )
