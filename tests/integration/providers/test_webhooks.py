"""Webhook delivery from the simulator to a real receiving server: signatures the adapter
accepts, order, retries with backoff, duplicates, dropping."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from typing import Any

import pytest

from payguard.providers import StripeProvider
from tests.integration.providers.conftest import (
    Receiver,
    SimFactory,
    SimHarness,
    create_session,
    make_settings,
)


def verified(provider: StripeProvider, receiver: Receiver) -> list[dict[str, Any]]:
    return [provider.construct_event(body, sig) for body, sig in receiver.accepted]


async def test_succeeded_payment_delivers_one_signed_completed_event(
        sim: SimHarness, provider: StripeProvider, receiver: Receiver) -> None:
    session = await create_session(provider)
    result = await sim.pay(session.id)
    rows = await sim.settled(session.id)
    assert [(r["event_type"], r["state"], r["attempts"]) for r in rows] == [
        ("checkout.session.completed", "delivered", 1)]
    [event] = verified(provider, receiver)
    assert event["id"] == result["events"][0]["id"] and event["id"].startswith("evt_")
    assert event["object"] == "event" and isinstance(event["created"], int)
    obj = event["data"]["object"]
    assert (obj["id"], obj["status"], obj["payment_status"]) == (session.id, "complete", "paid")
    assert obj["metadata"]["purchase_id"] == "pur_1"


@pytest.mark.parametrize(("outcome", "second", "final"), [
    ("async_succeeded", "checkout.session.async_payment_succeeded", "paid"),
    ("async_failed", "checkout.session.async_payment_failed", "unpaid"),
])
async def test_async_outcomes_send_completed_unpaid_then_the_verdict(
        sim: SimHarness, provider: StripeProvider, receiver: Receiver,
        outcome: str, second: str, final: str) -> None:
    session = await create_session(provider)
    await sim.pay(session.id, outcome)
    await sim.settled(session.id)
    events = verified(provider, receiver)
    assert [(e["type"], e["data"]["object"]["payment_status"]) for e in events] == [
        ("checkout.session.completed", "unpaid"), (second, final)]
    now = await provider.retrieve_checkout_session(session.id)
    assert (now.status, now.payment_status) == ("complete", final)


async def test_declined_card_keeps_session_open(sim: SimHarness, provider: StripeProvider,
                                                receiver: Receiver) -> None:
    session = await create_session(provider)
    await sim.pay(session.id, "failed")
    await sim.settled(session.id)
    after = await provider.retrieve_checkout_session(session.id)
    assert (after.status, after.payment_status) == ("open", "unpaid")
    [event] = verified(provider, receiver)
    assert event["type"] == "payment_intent.payment_failed"
    assert event["data"]["object"]["last_payment_error"]["code"] == "card_declined"
    await sim.pay(session.id, "succeeded")  # the customer tries another card
    paid = await provider.retrieve_checkout_session(session.id)
    assert paid.is_paid and paid.payment_intent == after.payment_intent


async def test_failed_deliveries_are_retried_until_accepted(
        sim: SimHarness, provider: StripeProvider, receiver: Receiver) -> None:
    receiver.fail_first = 2
    session = await create_session(provider)
    await sim.pay(session.id)
    [row] = await sim.settled(session.id)
    assert (row["state"], row["attempts"], row["last_status"]) == ("delivered", 3, 200)
    assert [status for _, _, status in receiver.hits] == [500, 500, 200]
    bodies = {body for body, _, _ in receiver.hits}
    assert len(bodies) == 1  # the same event each time, signed afresh
    assert len(verified(provider, receiver)) == 1


async def test_unreachable_endpoint_gives_up_after_the_attempts(
        start_sim: SimFactory) -> None:
    sim = await start_sim(webhook_url="http://127.0.0.1:9/hook", attempts=3)
    provider = StripeProvider(make_settings(sim.tmp_path, stripe_api_base=sim.url))
    try:
        session = await create_session(provider)
        await sim.pay(session.id)
        [row] = await sim.settled(session.id)
        assert (row["state"], row["attempts"], row["last_status"]) == ("failed", 3, None)
        assert "ConnectError" in row["last_error"]
    finally:
        await provider.close()


async def test_duplicate_deliveries_send_every_event_n_times(
        start_sim: SimFactory, receiver: Receiver) -> None:
    sim = await start_sim(duplicates=3)
    provider = StripeProvider(make_settings(sim.tmp_path, stripe_api_base=sim.url))
    try:
        session = await create_session(provider)
        result = await sim.pay(session.id, "async_succeeded")
        rows = await sim.settled(session.id)
        assert len(rows) == 6 and {r["state"] for r in rows} == {"delivered"}
        events = verified(provider, receiver)
        counts = Counter(e["id"] for e in events)
        assert counts == {e["id"]: 3 for e in result["events"]}
        # Copies of one event are byte-identical payloads.
        assert len({body for body, _ in receiver.accepted}) == 2
    finally:
        await provider.close()


async def test_dropped_webhooks_complete_the_session_silently(
        start_sim: SimFactory, receiver: Receiver) -> None:
    sim = await start_sim(drop=True)
    provider = StripeProvider(make_settings(sim.tmp_path, stripe_api_base=sim.url))
    try:
        session = await create_session(provider)
        await sim.pay(session.id)
        await sim.sim.deliverer.wait_idle()
        await asyncio.sleep(0.05)
        rows = await sim.deliveries(session.id)
        assert [(r["event_type"], r["state"]) for r in rows] == [
            ("checkout.session.completed", "dropped")]
        assert receiver.hits == []
        assert (await provider.retrieve_checkout_session(session.id)).is_paid
    finally:
        await provider.close()


async def test_event_payload_is_stripe_json(sim: SimHarness, provider: StripeProvider,
                                            receiver: Receiver) -> None:
    session = await create_session(provider)
    await provider.expire_checkout_session(session.id, idempotency_key="x")
    await sim.settled(session.id)
    [(body, sig)] = receiver.accepted
    assert sig is not None and sig.startswith("t=") and ",v1=" in sig
    raw = json.loads(body)
    assert raw["type"] == "checkout.session.expired" and raw["livemode"] is False
    assert raw["data"]["object"]["object"] == "checkout.session"
