"""The payment-provider port: what the service needs from a card processor, nothing more.

The service never imports the Stripe SDK; it talks to a :class:`PaymentProvider` obtained
from :func:`create_provider`, and gets back :class:`ProviderSession` values.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable

from payguard.errors import PayguardError
from payguard.telemetry import NO_METRICS, MetricsSink

if TYPE_CHECKING:
    from payguard.config import Settings

__all__ = [
    "PaymentProvider",
    "PaymentStatus",
    "ProviderSession",
    "SessionStatus",
    "WebhookSignatureError",
    "create_provider",
]

SessionStatus = Literal["open", "complete", "expired"]
PaymentStatus = Literal["paid", "unpaid", "no_payment_required"]


class WebhookSignatureError(PayguardError):
    """A webhook's ``Stripe-Signature`` (or PhonePe callback ``Authorization``) is missing,
    malformed, wrong or outside the tolerance."""

    code, title = "INVALID_SIGNATURE", "Invalid webhook signature"


@dataclass(frozen=True)
class ProviderSession:
    """A hosted checkout session as the provider sees it. ``amount_total`` is minor units."""

    id: str
    url: str | None
    status: SessionStatus
    payment_status: PaymentStatus
    amount_total: int
    currency: str  # upper-case ISO 4217, whatever case the provider uses
    expires_at: datetime
    payment_intent: str | None = None
    card_brand: str | None = None
    card_last4: str | None = None
    customer_name: str | None = None
    customer_email: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    client_reference_id: str | None = None
    #: The provider says the payment failed for good (PhonePe ``FAILED``); Stripe leaves a
    #: declined session open, so this stays False there.
    failed: bool = False

    @property
    def is_paid(self) -> bool:
        return self.status == "complete" and self.payment_status == "paid"


@runtime_checkable
class PaymentProvider(Protocol):
    """Every call may raise :class:`payguard.errors.ProviderUnavailable` (retryable)."""

    name: str

    async def create_checkout_session(
        self,
        *,
        purchase_id: str,
        amount: int,
        currency: str,
        description: str,
        customer_email: str | None,
        success_url: str,
        cancel_url: str,
        expires_at: datetime,
        metadata: dict[str, str],
        idempotency_key: str,
    ) -> ProviderSession: ...

    async def retrieve_checkout_session(self, session_id: str) -> ProviderSession: ...

    async def expire_checkout_session(
        self, session_id: str, *, idempotency_key: str
    ) -> ProviderSession: ...

    async def refund(
        self, *, payment_intent: str, amount: int, idempotency_key: str,
        reason: str | None = None,
    ) -> str: ...

    def construct_event(self, payload: bytes, sig_header: str | None) -> dict[str, Any]: ...

    async def close(self) -> None: ...


def create_provider(settings: Settings, *, metrics: MetricsSink = NO_METRICS) -> PaymentProvider:
    """The configured provider. Each real provider and its simulator share one SDK adapter."""
    if settings.payment_provider == "phonepe":
        from payguard.providers.phonepe.adapter import PhonePeProvider

        return PhonePeProvider(settings, metrics=metrics)
    from payguard.providers.stripe_adapter import StripeProvider

    return StripeProvider(settings, metrics=metrics)
