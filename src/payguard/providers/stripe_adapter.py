"""The one :class:`PaymentProvider` implementation: the official ``stripe`` SDK, async.

Used for real Stripe and for the simulator alike; only the API base differs. Calls go
through ``StripeClient`` with the SDK's httpx-based async HTTP client (``*_async``
methods), so nothing blocks the event loop. Every call is bounded three ways: a slot in
:class:`CallLimiter` (or an immediate 503 when the waiting room is full), an overall
``provider_timeout``, and the SDK's own HTTP timeout. Anything that goes wrong becomes
:class:`ProviderUnavailable`; the service retries with the same idempotency key.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeVar

import stripe

from payguard.errors import ProviderUnavailable, ValidationFailed
from payguard.providers.base import ProviderSession, WebhookSignatureError
from payguard.providers.http_client import SdkHttpxClient
from payguard.providers.limiter import CallLimiter, ProviderStats
from payguard.providers.mapping import SESSION_EXPAND, session_from_stripe
from payguard.telemetry import NO_METRICS, MetricsSink

if TYPE_CHECKING:
    from payguard.config import Settings

__all__ = ["STRIPE_API_BASE", "WEBHOOK_TOLERANCE", "StripeProvider", "resolve_api_base"]

STRIPE_API_BASE = "https://api.stripe.com"
WEBHOOK_TOLERANCE = 300
#: Stripe's own refund reasons; any other text travels in ``metadata[reason]``.
_STRIPE_REFUND_REASONS = frozenset({"duplicate", "fraudulent", "requested_by_customer"})

T = TypeVar("T")


def resolve_api_base(settings: Settings) -> str:
    """``PAYGUARD_STRIPE_API_BASE``, else the simulator under the public URL, else Stripe."""
    if settings.stripe_api_base:
        return settings.stripe_api_base.rstrip("/")
    if settings.provider == "simulated":
        return settings.public_url.rstrip("/") + "/sim"
    return STRIPE_API_BASE


class StripeProvider:
    """Stripe Checkout through the official SDK. One instance per process; call ``close()``."""

    def __init__(self, settings: Settings, *, metrics: MetricsSink = NO_METRICS) -> None:
        self.name: str = settings.provider
        self.api_base = resolve_api_base(settings)
        self._timeout = settings.provider_timeout
        self._webhook_secret = settings.stripe_webhook_secret
        self._http = SdkHttpxClient(timeout=settings.provider_timeout)
        self._client = stripe.StripeClient(
            settings.stripe_api_key,
            base_addresses={"api": self.api_base},
            http_client=self._http,
            # The SDK would retry with backoff inside our timeout budget; the service's own
            # retry (same idempotency key) is the one place retries are decided.
            max_network_retries=0,
        )
        self._metrics = metrics
        self._limiter = CallLimiter(settings.provider_concurrency, settings.provider_queue,
                                    metrics=metrics)

    @property
    def stats(self) -> ProviderStats:
        return self._limiter.stats

    async def _call(self, operation: str, what: str, fn: Callable[[], Awaitable[T]]) -> T:
        """Run one SDK call in a limiter slot; ``operation`` labels it in the metrics
        (timed including the wait for a slot; any failure counts as one)."""
        started = time.perf_counter()
        ok = False
        try:
            result = await self._call_limited(what, fn)
            ok = True
            return result
        finally:
            self._metrics.provider_call(operation, time.perf_counter() - started, ok)

    async def _call_limited(self, what: str, fn: Callable[[], Awaitable[T]]) -> T:
        stats = self._limiter.stats
        try:
            # The timeout covers the wait for a slot too: the caller's budget is end to end.
            async with asyncio.timeout(self._timeout), self._limiter.slot():
                stats.calls_total += 1
                return await fn()
        except ProviderUnavailable:
            raise  # queue full: already counted as rejected
        except TimeoutError as exc:
            stats.errors_total += 1
            stats.timeouts_total += 1
            raise ProviderUnavailable(f"{what}: provider timed out after {self._timeout}s") from exc
        except stripe.StripeError as exc:
            stats.errors_total += 1
            raise ProviderUnavailable(
                f"{what}: {exc.user_message or exc.__class__.__name__}",
                provider_status=exc.http_status,
                provider_code=exc.code,
            ) from exc

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
    ) -> ProviderSession:
        meta = {**metadata, "purchase_id": purchase_id}
        params: dict[str, Any] = {
            "mode": "payment",
            "line_items": [{
                "quantity": 1,
                "price_data": {
                    "currency": currency.lower(),
                    "unit_amount": amount,
                    "product_data": {"name": description},
                },
            }],
            "success_url": success_url,
            "cancel_url": cancel_url,
            "expires_at": int(expires_at.timestamp()),
            "client_reference_id": purchase_id,
            "metadata": meta,
            # Lets a refund or a dispute on the payment intent be traced to the purchase.
            "payment_intent_data": {"metadata": meta},
        }
        if customer_email:
            params["customer_email"] = customer_email
        session = await self._call(
            "create_session", "create checkout session",
            lambda: self._client.v1.checkout.sessions.create_async(
                params, {"idempotency_key": idempotency_key}  # type: ignore[arg-type]
            ),
        )
        return session_from_stripe(session.to_dict())

    async def retrieve_checkout_session(self, session_id: str) -> ProviderSession:
        session = await self._call(
            "retrieve_session", "retrieve checkout session",
            lambda: self._client.v1.checkout.sessions.retrieve_async(
                session_id, {"expand": SESSION_EXPAND}
            ),
        )
        return session_from_stripe(session.to_dict())

    async def expire_checkout_session(
        self, session_id: str, *, idempotency_key: str
    ) -> ProviderSession:
        """Expire an open session. A session that is no longer open (paid meanwhile, or
        already expired) is not an error: its current state is returned for the caller
        to act on, since "cancel" racing "pay" is normal and must not look like an outage."""
        try:
            session = await self._call(
                "expire_session", "expire checkout session",
                lambda: self._client.v1.checkout.sessions.expire_async(
                    session_id, {"expand": SESSION_EXPAND},
                    {"idempotency_key": idempotency_key},
                ),
            )
        except ProviderUnavailable as exc:
            if exc.extra.get("provider_status") != 400:
                raise
            current = await self.retrieve_checkout_session(session_id)
            if current.status == "open":
                raise
            return current
        return session_from_stripe(session.to_dict())

    async def refund(
        self, *, payment_intent: str, amount: int, idempotency_key: str,
        reason: str | None = None,
    ) -> str:
        params: dict[str, Any] = {"payment_intent": payment_intent, "amount": amount}
        if reason in _STRIPE_REFUND_REASONS:
            params["reason"] = reason
        elif reason:
            params["reason"] = "requested_by_customer"
            params["metadata"] = {"reason": reason[:500]}  # Stripe's metadata value limit
        refund = await self._call(
            "refund", "refund",
            lambda: self._client.v1.refunds.create_async(
                params, {"idempotency_key": idempotency_key}  # type: ignore[arg-type]
            ),
        )
        return str(refund.id)

    def construct_event(self, payload: bytes, sig_header: str | None) -> dict[str, Any]:
        """Verify ``Stripe-Signature`` (300 s tolerance, any matching ``v1``), then parse.

        Only the signature is checked here; the caller validates the event's shape (a
        signed payload is authentic, not necessarily well formed). Parsed with ``json``
        rather than into SDK objects, which fail in odd ways on odd shapes.
        """
        if not sig_header:
            raise WebhookSignatureError("missing Stripe-Signature header")
        try:
            stripe.WebhookSignature.verify_header(
                payload.decode("utf-8"), sig_header, self._webhook_secret,
                tolerance=WEBHOOK_TOLERANCE)
        except stripe.SignatureVerificationError as exc:
            raise WebhookSignatureError(str(exc.user_message or exc)[:300]) from exc
        except (ValueError, UnicodeDecodeError) as exc:
            raise WebhookSignatureError("unreadable webhook payload or signature") from exc
        try:
            event: Any = json.loads(payload)
        except (ValueError, RecursionError) as exc:
            raise ValidationFailed("the webhook payload is not JSON", errors=[
                {"loc": ["body"], "msg": "not JSON"}]) from exc
        if not isinstance(event, dict):
            raise ValidationFailed("the webhook payload is not an event object", errors=[
                {"loc": ["body"], "msg": "not an object"}])
        return event

    async def close(self) -> None:
        await self._http.close_async()  # type: ignore[no-untyped-call]
