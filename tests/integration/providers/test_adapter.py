"""The Stripe SDK adapter against the simulator on a real socket: shapes, idempotency,
expiry, refunds, and every failure path becoming ProviderUnavailable."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
import stripe

from payguard.errors import ProviderUnavailable
from payguard.providers import StripeProvider
from tests.integration.providers.conftest import (
    SimFactory,
    SimHarness,
    create_session,
    make_settings,
)


async def test_create_and_retrieve_map_stripe_shapes(sim: SimHarness,
                                                     provider: StripeProvider) -> None:
    expires = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=1800)
    created = await create_session(provider, expires_at=expires)
    assert created.id.startswith("cs_test_")
    assert created.url == f"{sim.url}/checkout/{created.id}"
    assert (created.status, created.payment_status) == ("open", "unpaid")
    assert (created.amount_total, created.currency, created.expires_at) == (1234, "USD", expires)
    assert created.metadata == {"order_number": "ORD2026000001", "purchase_id": "pur_1"}
    assert created.client_reference_id == "pur_1"
    assert created.customer_email == "ann@example.com"
    assert (created.payment_intent, created.card_brand, created.card_last4) == (None, None, None)
    assert await provider.retrieve_checkout_session(created.id) == created

    # Raw wire shape, as Stripe sends it (lower-case currency, unexpanded payment_intent).
    r = await sim.http.get(f"{sim.url}/v1/checkout/sessions/{created.id}", headers=sim.auth())
    body = r.json()
    assert r.status_code == 200
    assert body["object"] == "checkout.session" and body["currency"] == "usd"
    assert body["mode"] == "payment" and body["customer_details"] is None
    assert body["expires_at"] == int(expires.timestamp())


async def test_paid_session_carries_card_and_customer(sim: SimHarness,
                                                      provider: StripeProvider) -> None:
    session = await create_session(provider)
    await sim.pay(session.id, "succeeded", card={"brand": "mastercard", "last4": "4444"},
                  name="Ann Lee")
    paid = await provider.retrieve_checkout_session(session.id)
    assert (paid.status, paid.payment_status, paid.url) == ("complete", "paid", None)
    assert paid.payment_intent is not None and paid.payment_intent.startswith("pi_")
    assert (paid.card_brand, paid.card_last4) == ("mastercard", "4444")
    assert (paid.customer_name, paid.customer_email) == ("Ann Lee", "ann@example.com")
    r = await sim.http.get(f"{sim.url}/v1/payment_intents/{paid.payment_intent}",
                           params={"expand[0]": "latest_charge"}, headers=sim.auth())
    pi = r.json()
    assert (pi["status"], pi["amount_received"]) == ("succeeded", 1234)
    assert pi["metadata"]["purchase_id"] == "pur_1"
    assert pi["latest_charge"]["payment_method_details"]["card"]["last4"] == "4444"


async def test_idempotent_create_replays_and_rejects_changed_params(
        sim: SimHarness, provider: StripeProvider) -> None:
    first = await create_session(provider, key="same-key")
    again = await create_session(provider, key="same-key")
    assert again == first
    with pytest.raises(ProviderUnavailable) as info:
        await create_session(provider, key="same-key", amount=999)
    assert isinstance(info.value.__cause__, stripe.IdempotencyError)
    assert info.value.extra["provider_status"] == 400

    # On the wire: the byte-identical body, flagged as a replay.
    form = {"mode": "payment", "success_url": "https://x.test/ok",
            "line_items[0][quantity]": "2", "line_items[0][price_data][currency]": "usd",
            "line_items[0][price_data][unit_amount]": "500",
            "line_items[0][price_data][product_data][name]": "Key"}
    one = await sim.http.post(f"{sim.url}/v1/checkout/sessions", data=form,
                              headers=sim.auth("raw-key"))
    two = await sim.http.post(f"{sim.url}/v1/checkout/sessions", data=form,
                              headers=sim.auth("raw-key"))
    assert one.status_code == two.status_code == 200
    assert one.json()["amount_total"] == 1000
    assert "idempotent-replayed" not in one.headers
    assert two.headers["idempotent-replayed"] == "true" and two.content == one.content
    three = await sim.http.post(f"{sim.url}/v1/checkout/sessions",
                                data={**form, "line_items[0][quantity]": "3"},
                                headers=sim.auth("raw-key"))
    assert three.status_code == 400 and three.json()["error"]["type"] == "idempotency_error"


async def test_expire_and_expire_after_completion(sim: SimHarness,
                                                  provider: StripeProvider) -> None:
    session = await create_session(provider)
    expired = await provider.expire_checkout_session(session.id, idempotency_key="exp-1")
    assert (expired.status, expired.payment_status, expired.url) == ("expired", "unpaid", None)
    rows = await sim.settled(session.id)
    assert [(r["event_type"], r["state"]) for r in rows] == [
        ("checkout.session.expired", "delivered")]
    r = await sim.http.post(f"{sim.url}/checkout/{session.id}/pay", json={"outcome": "succeeded"})
    assert r.status_code == 400 and r.json()["error"]["code"] == "checkout_session_not_open"

    # Cancel racing pay: the session completed first; expire reports it instead of failing.
    other = await create_session(provider, key="k-2", purchase_id="pur_2")
    await sim.pay(other.id)
    current = await provider.expire_checkout_session(other.id, idempotency_key="exp-2")
    assert (current.status, current.payment_status) == ("complete", "paid")


async def test_session_expires_when_read_past_expires_at(sim: SimHarness,
                                                         provider: StripeProvider) -> None:
    session = await create_session(provider, expires_in=1)
    await asyncio.sleep(1.2)
    read = await provider.retrieve_checkout_session(session.id)
    assert read.status == "expired"
    rows = await sim.settled(session.id)
    assert [r["event_type"] for r in rows] == ["checkout.session.expired"]


async def test_refunds_are_idempotent_and_bounded(sim: SimHarness,
                                                  provider: StripeProvider) -> None:
    session = await create_session(provider, amount=1000)
    await sim.pay(session.id)
    pi = (await provider.retrieve_checkout_session(session.id)).payment_intent
    assert pi is not None
    first = await provider.refund(payment_intent=pi, amount=300, idempotency_key="r-1",
                                  reason="seat released by admin")
    assert first.startswith("re_")
    assert await provider.refund(payment_intent=pi, amount=300, idempotency_key="r-1",
                                 reason="seat released by admin") == first
    with pytest.raises(ProviderUnavailable) as info:
        await provider.refund(payment_intent=pi, amount=701, idempotency_key="r-2")
    assert info.value.extra["provider_code"] == "amount_too_large"
    rest = await provider.refund(payment_intent=pi, amount=700, idempotency_key="r-3")
    assert rest not in (first, "")
    with pytest.raises(ProviderUnavailable) as info:
        await provider.refund(payment_intent=pi, amount=1, idempotency_key="r-4")
    assert info.value.extra["provider_code"] == "charge_already_refunded"


async def test_api_key_is_required(sim: SimHarness) -> None:
    r = await sim.http.get(f"{sim.url}/v1/checkout/sessions/cs_test_x")
    assert r.status_code == 401 and r.json()["error"]["type"] == "invalid_request_error"
    r = await sim.http.get(f"{sim.url}/v1/checkout/sessions/cs_test_x",
                           headers={"Authorization": "Bearer sk_wrong"})
    assert r.status_code == 401
    r = await sim.http.get(f"{sim.url}/v1/checkout/sessions/cs_test_x", headers=sim.auth())
    assert r.status_code == 404 and r.json()["error"]["code"] == "resource_missing"


async def test_injected_failures_become_provider_unavailable(start_sim: SimFactory) -> None:
    sim = await start_sim(failure_rate=1.0)
    provider = StripeProvider(make_settings(sim.tmp_path, stripe_api_base=sim.url))
    try:
        with pytest.raises(ProviderUnavailable) as info:
            await create_session(provider)
        assert isinstance(info.value.__cause__, stripe.APIError)
        assert provider.stats.calls_total == provider.stats.errors_total == 1
    finally:
        await provider.close()


async def test_network_error_and_timeout_become_provider_unavailable(
        start_sim: SimFactory) -> None:
    sim = await start_sim(latency_ms=600)
    slow = StripeProvider(make_settings(sim.tmp_path, stripe_api_base=sim.url,
                                        provider_timeout=0.2))
    dead = StripeProvider(make_settings(sim.tmp_path, stripe_api_base="http://127.0.0.1:9"))
    try:
        with pytest.raises(ProviderUnavailable, match="timed out"):
            await slow.retrieve_checkout_session("cs_test_x")
        assert slow.stats.timeouts_total == 1
        with pytest.raises(ProviderUnavailable) as info:
            await dead.retrieve_checkout_session("cs_test_x")
        assert isinstance(info.value.__cause__, stripe.APIConnectionError)
    finally:
        await slow.close()
        await dead.close()


async def test_full_queue_is_refused_at_once(start_sim: SimFactory) -> None:
    sim = await start_sim(latency_ms=300)
    provider = StripeProvider(make_settings(sim.tmp_path, stripe_api_base=sim.url,
                                            provider_concurrency=1, provider_queue=1))
    try:
        running = asyncio.create_task(provider.retrieve_checkout_session("cs_test_a"))
        waiting = asyncio.create_task(provider.retrieve_checkout_session("cs_test_b"))
        await asyncio.sleep(0.05)
        assert (provider.stats.in_flight, provider.stats.queued) == (1, 1)
        with pytest.raises(ProviderUnavailable, match="queue is full"):
            await provider.retrieve_checkout_session("cs_test_c")
        # Refused while the other two were still in flight/queued: no waiting for a timeout.
        assert (running.done(), waiting.done()) == (False, False)
        assert provider.stats.rejected_total == 1
        for task in (running, waiting):  # both reach the simulator: unknown id -> 404
            with pytest.raises(ProviderUnavailable) as info:
                await task
            assert info.value.extra["provider_status"] == 404
        assert (provider.stats.in_flight, provider.stats.queued) == (0, 0)
    finally:
        await provider.close()
