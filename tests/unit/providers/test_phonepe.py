"""PhonePe adapter pieces that need no network: schedule, mapping, callback check, settings."""

from __future__ import annotations

import asyncio
import hashlib
import json
import threading
from types import SimpleNamespace
from typing import Any

import pytest

from payguard.config import Settings
from payguard.errors import ProviderUnavailable
from payguard.providers.base import WebhookSignatureError
from payguard.providers.phonepe.adapter import PhonePeProvider, check_settings
from payguard.providers.phonepe.mapping import merchant_id_from_key, session_from_order
from payguard.providers.phonepe.schedule import next_poll_delay

REAL = {"phonepe_client_id": "M123", "phonepe_client_secret": "s3cret",
        "phonepe_callback_username": "merchant", "phonepe_callback_password": "cb-pass",
        "currency": "INR"}


def test_poll_schedule_follows_phonepe_and_scales() -> None:
    assert [next_poll_delay(t) for t in (0, 29, 30, 89, 90, 149, 150, 209, 210, 5000)] == [
        3, 3, 6, 6, 10, 10, 30, 30, 60, 60]
    assert next_poll_delay(0, scale=0.05) == pytest.approx(0.15)
    assert next_poll_delay(10.5, scale=0.05) == pytest.approx(3.0)  # 210 s of the schedule


def test_order_states_map_onto_the_session_port() -> None:
    paid = session_from_order("pur_1", {"state": "COMPLETED", "amount": 500,
                                        "expireAt": 1_800_000_000_000, "orderId": "OMO1"})
    assert (paid.status, paid.payment_status, paid.is_paid, paid.failed) == (
        "complete", "paid", True, False)
    assert (paid.currency, paid.amount_total, paid.payment_intent) == ("INR", 500, "pur_1")
    assert paid.expires_at.timestamp() == 1_800_000_000
    failed = session_from_order("pur_1", {"state": "FAILED", "errorCode": "X",
                                          "expireAt": 4_000_000_000_000})
    assert (failed.is_paid, failed.failed, failed.metadata["phonepe_error"]) == (False, True, "X")
    expired = session_from_order("pur_1", {"state": "FAILED", "expireAt": 1_000})
    assert (expired.status, expired.is_paid, expired.failed) == ("expired", False, False)
    pending = session_from_order("pur_1", {"state": "PENDING"})
    assert (pending.status, pending.is_paid, pending.failed) == ("open", False, False)


def test_merchant_ids_derive_from_our_keys() -> None:
    assert merchant_id_from_key("payguard:pur_a-B_c:refund") == "payguard-pur_a-B_c-refund"
    assert len(merchant_id_from_key("x" * 100)) == 63


def test_real_phonepe_refuses_simulator_or_missing_credentials() -> None:
    with pytest.raises(ValueError, match="PAYGUARD_PHONEPE_CLIENT_SECRET"):
        check_settings(Settings(provider="phonepe", **{**REAL, "phonepe_client_secret": ""}))
    with pytest.raises(ValueError, match="PAYGUARD_PHONEPE_CALLBACK_PASSWORD"):
        check_settings(Settings(provider="phonepe", **{
            k: v for k, v in REAL.items() if k != "phonepe_callback_password"}))
    with pytest.raises(ValueError, match="INR"):
        check_settings(Settings(provider="simulated", simulated_provider="phonepe"))
    check_settings(Settings(provider="phonepe", **REAL))  # complete: accepted
    check_settings(Settings(provider="simulated", simulated_provider="phonepe", currency="INR"))


async def test_callback_authorization_is_checked_with_the_sdk() -> None:
    provider = PhonePeProvider(Settings(provider="phonepe", **REAL))
    body = json.dumps({"event": "checkout.order.completed", "type": "PG_ORDER_COMPLETED",
                       "payload": {"merchantOrderId": "pur_1", "state": "COMPLETED"}}).encode()
    right = hashlib.sha256(b"merchant:cb-pass").hexdigest()
    try:
        assert provider.construct_event(body, right)["payload"]["merchantOrderId"] == "pur_1"
        for header in (None, "", hashlib.sha256(b"merchant:wrong").hexdigest(), "Bearer x"):
            with pytest.raises(WebhookSignatureError):
                provider.construct_event(body, header)
        with pytest.raises(WebhookSignatureError):
            provider.construct_event(b"not json", right)
    finally:
        await provider.close()


class _BlockingSdk:
    """Stands in for the SDK client: each status call blocks its thread until released."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.running = self.peak = 0
        self._lock = threading.Lock()

    def get_order_status(self, merchant_order_id: str) -> Any:
        with self._lock:
            self.running += 1
            self.peak = max(self.peak, self.running)
        try:
            self.release.wait(10)
        finally:
            with self._lock:
                self.running -= 1
        return SimpleNamespace(to_json=lambda: json.dumps({"state": "COMPLETED", "amount": 5}))


async def test_blocking_sdk_calls_share_the_bounded_queue() -> None:
    """2 calls on threads, 1 waiting, the rest refused at once; a caller that gives up
    keeps its slot until its thread is done, so the bound counts real SDK calls."""
    provider = PhonePeProvider(Settings(provider="simulated", simulated_provider="phonepe",
                                        currency="INR", provider_concurrency=2,
                                        provider_queue=1, provider_timeout=10))
    sdk = _BlockingSdk()
    provider._sdk = lambda: sdk  # type: ignore[method-assign]
    try:
        calls = [asyncio.create_task(provider.retrieve_checkout_session(f"pur_{i}"))
                 for i in range(6)]
        await asyncio.sleep(0.3)
        refused = [t for t in calls if t.done()]
        assert len(refused) == 3
        for t in refused:
            with pytest.raises(ProviderUnavailable, match="queue is full"):
                t.result()
        assert (sdk.running, provider.stats.in_flight, provider.stats.queued) == (2, 2, 1)
        running = [t for t in calls if not t.done()]
        running[0].cancel()  # its caller gives up; its thread still runs
        await asyncio.sleep(0.2)
        assert provider.stats.in_flight == 2 and sdk.running == 2
        sdk.release.set()
        results = await asyncio.gather(*running, return_exceptions=True)
        assert isinstance(results[0], asyncio.CancelledError)
        assert all(getattr(r, "is_paid", False) for r in results[1:])
        assert sdk.peak == 2 and provider.stats.in_flight == 0
        assert provider.stats.rejected_total == 3
    finally:
        sdk.release.set()
        await provider.close()
