"""The PhonePe Standard Checkout v2 adapter: the official SDK behind the provider port.

The SDK is blocking (``requests``). Each call runs on a worker thread of this adapter's own
pool, sized to ``PAYGUARD_PROVIDER_CONCURRENCY``, and only after taking a slot of the same
:class:`CallLimiter` every provider uses: at most ``concurrency`` calls in flight, up to
``PAYGUARD_PROVIDER_QUEUE`` waiting, beyond that an immediate ``503 PROVIDER_UNAVAILABLE``.
A slot is released only when its thread is done (a thread cannot be cancelled), so the
bound holds even for calls whose caller gave up. Anything that goes wrong becomes
:class:`ProviderUnavailable`; the service retries with the same derived ids.

Ids: the merchant order id *is* the purchase id, so a repeated pay call for one purchase
names the same order and cannot create a second one; refunds use the merchant refund id
derived from our key ``payguard:{purchase}:refund``.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeVar

from phonepe.sdk.pg.common.configs.http_client_config import HttpClientConfig
from phonepe.sdk.pg.common.exceptions import PhonePeException
from phonepe.sdk.pg.common.models.request.meta_info import MetaInfo
from phonepe.sdk.pg.common.models.request.refund_request import RefundRequest
from phonepe.sdk.pg.common.utils.hash_utils import is_callback_valid
from phonepe.sdk.pg.payments.v2.models.callback_response import CallbackResponse
from phonepe.sdk.pg.payments.v2.models.request.standard_checkout_pay_request import (
    StandardCheckoutPayRequest,
)
from phonepe.sdk.pg.payments.v2.standard_checkout_client import StandardCheckoutClient
from requests import RequestException

from payguard.errors import ProviderUnavailable
from payguard.providers.base import ProviderSession, WebhookSignatureError
from payguard.providers.limiter import CallLimiter, ProviderStats
from payguard.providers.phonepe.mapping import CURRENCY, merchant_id_from_key, session_from_order
from payguard.providers.phonepe.sdk_client import build_client
from payguard.telemetry import NO_METRICS, MetricsSink

if TYPE_CHECKING:
    from payguard.config import Settings

__all__ = ["PhonePeProvider", "check_settings", "resolve_api_base"]

T = TypeVar("T")


def resolve_api_base(settings: Settings) -> str | None:
    """``PAYGUARD_PHONEPE_API_BASE``, else the simulator under the public URL, else the
    SDK's own host for ``PAYGUARD_PHONEPE_ENV`` (None)."""
    if settings.phonepe_api_base:
        return settings.phonepe_api_base.rstrip("/")
    if settings.provider == "simulated":
        return settings.public_url.rstrip("/") + "/sim/phonepe"
    return None


def _sdk_dict(obj: Any) -> dict[str, Any]:
    """An SDK response model as PhonePe's camelCase JSON."""
    result: dict[str, Any] = json.loads(obj.to_json())
    return result


def check_settings(settings: Settings) -> None:
    """Refuse to start what cannot work: PhonePe takes rupees only, and real PhonePe must
    not run on the simulator's credentials (or none)."""
    if settings.currency != CURRENCY:
        raise ValueError(f"PhonePe takes {CURRENCY} only: set PAYGUARD_CURRENCY=INR "
                         f"(it is {settings.currency})")
    # Production mode (PAYGUARD_PROVIDER=phonepe): `serve` refuses these before it gets here.
    problems = settings.production_problems()
    if problems:
        raise ValueError("PAYGUARD_PROVIDER=phonepe needs real PhonePe credentials: "
                         + "; ".join(problems))


class PhonePeProvider:
    """PhonePe through ``phonepe-pg-sdk-python``. One instance per process; call ``close()``."""

    name = "phonepe"

    def __init__(self, settings: Settings, *, metrics: MetricsSink = NO_METRICS) -> None:
        check_settings(settings)
        self.api_base = resolve_api_base(settings)
        self._settings = settings
        self._timeout = settings.provider_timeout
        self._username = settings.phonepe_callback_username
        self._password = settings.phonepe_callback_password
        self._metrics = metrics
        self._limiter = CallLimiter(settings.provider_concurrency, settings.provider_queue,
                                    metrics=metrics)
        # One thread per slot: the limiter decides who runs, the pool never makes anyone wait.
        self._pool = ThreadPoolExecutor(max_workers=settings.provider_concurrency,
                                        thread_name_prefix="phonepe-sdk")
        self._http_config = HttpClientConfig(
            pool_size=settings.provider_concurrency,
            connect_timeout_seconds=min(3.0, settings.provider_timeout),
            read_timeout_seconds=settings.provider_timeout,
        )
        self._client: StandardCheckoutClient | None = None
        self._client_lock = threading.Lock()

    @property
    def stats(self) -> ProviderStats:
        return self._limiter.stats

    def _sdk(self) -> StandardCheckoutClient:
        """Built on first use, on a worker thread: its constructor fetches an OAuth token,
        and the simulator mounted in this very server is not listening during startup."""
        with self._client_lock:
            if self._client is None:
                s = self._settings
                self._client = build_client(
                    client_id=s.phonepe_client_id, client_secret=s.phonepe_client_secret,
                    client_version=s.phonepe_client_version, env=s.phonepe_env,
                    pg_base_url=self.api_base,
                    oauth_base_url=s.phonepe_oauth_base or self.api_base,
                    http_client_config=self._http_config)
            return self._client

    async def _call(self, operation: str, what: str,
                    fn: Callable[[StandardCheckoutClient], T]) -> T:
        """One SDK call in a limiter slot; ``operation`` labels it in the metrics (timed
        including the wait for a slot; any failure counts as one)."""
        started = time.perf_counter()
        ok = False
        try:
            result = await self._call_limited(what, fn)
            ok = True
            return result
        finally:
            self._metrics.provider_call(operation, time.perf_counter() - started, ok)

    async def _call_limited(self, what: str, fn: Callable[[StandardCheckoutClient], T]) -> T:
        stats = self._limiter.stats
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self._timeout):
                async with self._limiter.slot():
                    stats.calls_total += 1
                    future = loop.run_in_executor(self._pool, lambda: fn(self._sdk()))
                    try:
                        return await asyncio.shield(future)
                    except asyncio.CancelledError:
                        # Keep the slot until the thread is done: the concurrency bound
                        # counts SDK calls actually running, not callers still waiting.
                        await asyncio.wait([future])
                        raise
        except ProviderUnavailable:
            raise  # queue full: already counted as rejected
        except TimeoutError as exc:
            stats.errors_total += 1
            stats.timeouts_total += 1
            raise ProviderUnavailable(f"{what}: provider timed out after {self._timeout}s") from exc
        except PhonePeException as exc:
            stats.errors_total += 1
            raise ProviderUnavailable(
                f"{what}: PhonePe answered {exc.http_status_code} {exc.code or ''} "
                f"{exc.message or ''}".strip(),
                provider_status=exc.http_status_code, provider_code=exc.code,
            ) from exc
        except (RequestException, OSError, ValueError, KeyError) as exc:
            stats.errors_total += 1
            raise ProviderUnavailable(f"{what}: {type(exc).__name__}: {exc}") from exc

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
        """``pay`` for the merchant order named by the purchase id (a retry names the same
        order). ``cancel_url`` is unused: PhonePe returns to one redirect URL either way."""
        if currency.upper() != CURRENCY:
            # Startup refuses another PAYGUARD_CURRENCY; this catches a product priced in
            # another currency. The checkout is closed (nothing stays reserved) and refused.
            raise ProviderUnavailable(f"PhonePe takes {CURRENCY} only, not {currency}")
        expire_after = max(1, int((expires_at - datetime.now(UTC)).total_seconds()))
        meta = MetaInfo(udf1=purchase_id[:256], udf2=metadata.get("order_number", "")[:256],
                        udf3=description[:256])
        request = StandardCheckoutPayRequest.build_request(
            merchant_order_id=purchase_id, amount=amount, redirect_url=success_url,
            expire_after=expire_after, meta_info=meta, message=description[:100])
        try:
            response = await self._call("create_session", "pay",
                                        lambda c: _sdk_dict(c.pay(request)))
        except ProviderUnavailable as exc:
            if exc.extra.get("provider_status") not in (400, 409):
                raise
            # The order exists already (a pay retried after its answer was lost): the
            # order's status is the truth; PhonePe does not show its pay URL again.
            return await self.retrieve_checkout_session(purchase_id)
        return session_from_order(purchase_id, {**response, "amount": amount},
                                  url=response.get("redirectUrl"), expires_at=expires_at)

    async def retrieve_checkout_session(self, session_id: str) -> ProviderSession:
        order = await self._call("retrieve_session", "order status",
                                 lambda c: _sdk_dict(c.get_order_status(session_id)))
        return session_from_order(session_id, order)

    async def expire_checkout_session(
        self, session_id: str, *, idempotency_key: str
    ) -> ProviderSession:
        """PhonePe cannot cancel an order: it stays payable until it expires. The current
        state is returned; a payment that lands after our cancel is a late payment, which
        ``fulfil`` applies (seat re-taken if still free) or refunds."""
        return await self.retrieve_checkout_session(session_id)

    async def refund(
        self, *, payment_intent: str, amount: int, idempotency_key: str,
        reason: str | None = None,
    ) -> str:
        refund_id = merchant_id_from_key(idempotency_key)
        request = RefundRequest.build_refund_request(
            merchant_refund_id=refund_id, amount=amount,
            original_merchant_order_id=payment_intent)
        try:
            result = await self._call("refund", "refund", lambda c: _sdk_dict(c.refund(request)))
        except ProviderUnavailable as exc:
            if exc.extra.get("provider_status") not in (400, 409):
                raise
            # Already requested under this merchant refund id: it is the same refund.
            status = await self.refund_status(refund_id)
            if status.get("originalMerchantOrderId") not in (None, payment_intent):
                raise
            return refund_id
        return str(result.get("refundId") or refund_id)

    async def refund_status(self, merchant_refund_id: str) -> dict[str, Any]:
        return await self._call("refund_status", "refund status",
                                lambda c: _sdk_dict(c.get_refund_status(merchant_refund_id)))

    def construct_event(self, payload: bytes, sig_header: str | None) -> dict[str, Any]:
        """Check the callback's ``Authorization`` with the SDK (SHA-256 of the configured
        username:password) and parse it. Needs no token, so it never waits for the network."""
        if not sig_header:
            raise WebhookSignatureError("missing Authorization header")
        # The SDK's own check and model (what StandardCheckoutClient.validate_callback runs),
        # called directly: building a client would fetch an OAuth token first.
        if not is_callback_valid(username=self._username, password=self._password,
                                 response_header=sig_header.strip()):
            raise WebhookSignatureError("callback Authorization does not match")
        try:
            callback = CallbackResponse.from_dict(json.loads(payload))
        except (ValueError, UnicodeDecodeError, KeyError, TypeError, AttributeError) as exc:
            raise WebhookSignatureError(f"unreadable callback payload: {exc}") from exc
        if callback.type is None or callback.payload is None:
            raise WebhookSignatureError("callback without type or payload")
        body: dict[str, Any] = json.loads(payload)
        return body

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await asyncio.to_thread(client.close)
        self._pool.shutdown(wait=False, cancel_futures=True)
