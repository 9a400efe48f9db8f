"""Payment providers: the port the service uses, the Stripe SDK adapter, the simulator."""

from payguard.providers.base import (
    PaymentProvider,
    ProviderSession,
    WebhookSignatureError,
    create_provider,
)
from payguard.providers.limiter import ProviderStats
from payguard.providers.stripe_adapter import StripeProvider

__all__ = [
    "PaymentProvider",
    "ProviderSession",
    "ProviderStats",
    "StripeProvider",
    "WebhookSignatureError",
    "create_provider",
]
