"""Pure pieces: Stripe form decoding, session mapping, the concurrency limiter."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest

from payguard.errors import ProviderUnavailable
from payguard.providers.limiter import CallLimiter
from payguard.providers.mapping import session_from_stripe
from payguard.providers.simulator.forms import decode_pairs


def test_decode_stripe_form_encoding() -> None:
    pairs = [("mode", "payment"), ("metadata[purchase_id]", "p1"), ("metadata[x]", ""),
             ("line_items[0][quantity]", "1"),
             ("line_items[0][price_data][product_data][name]", "Seat"),
             ("line_items[1][quantity]", "2"), ("expand[]", "a"), ("expand[]", "b")]
    assert decode_pairs(pairs) == {
        "mode": "payment", "metadata": {"purchase_id": "p1", "x": ""},
        "line_items": [{"quantity": "1", "price_data": {"product_data": {"name": "Seat"}}},
                       {"quantity": "2"}],
        "expand": ["a", "b"],
    }
    with pytest.raises(ValueError):
        decode_pairs([("a", "1"), ("a[b]", "2")])
    with pytest.raises(ValueError):
        decode_pairs([("a]b[", "1")])


def test_session_mapping_reads_expanded_card_details() -> None:
    data = {
        "id": "cs_test_1", "url": None, "status": "complete", "payment_status": "paid",
        "amount_total": 500, "currency": "eur", "expires_at": 1_800_000_000,
        "customer_details": {"email": "a@x.test", "name": "Ann"}, "customer_email": None,
        "metadata": {"purchase_id": "p1"}, "client_reference_id": "p1",
        "payment_intent": {"id": "pi_1", "latest_charge": {"payment_method_details": {
            "card": {"brand": "amex", "last4": "0005"}}}},
    }
    s = session_from_stripe(data)
    assert (s.payment_intent, s.card_brand, s.card_last4) == ("pi_1", "amex", "0005")
    assert (s.currency, s.expires_at) == ("EUR", datetime.fromtimestamp(1_800_000_000, UTC))
    assert (s.customer_name, s.customer_email, s.is_paid) == ("Ann", "a@x.test", True)
    unexpanded = session_from_stripe({**data, "payment_intent": "pi_1",
                                      "customer_details": None, "customer_email": "b@x.test"})
    assert (unexpanded.payment_intent, unexpanded.card_brand) == ("pi_1", None)
    assert unexpanded.customer_email == "b@x.test"
    with pytest.raises(ValueError):
        session_from_stripe({**data, "status": "weird"})


async def test_limiter_refuses_at_once_when_the_waiting_room_is_full() -> None:
    limiter = CallLimiter(concurrency=2, queue=1)
    release = asyncio.Event()

    async def call() -> None:
        async with limiter.slot():
            await release.wait()

    tasks = [asyncio.create_task(call()) for _ in range(3)]
    await asyncio.sleep(0)
    assert (limiter.stats.in_flight, limiter.stats.queued) == (2, 1)
    with pytest.raises(ProviderUnavailable):
        async with limiter.slot():
            pass
    release.set()
    await asyncio.gather(*tasks)
    snap = limiter.stats.snapshot()
    assert (snap["in_flight"], snap["queued"], snap["rejected_total"]) == (0, 0, 1)
    assert snap["latency_seconds_count"] == 3 and sum(limiter.stats.latency_buckets) == 3
