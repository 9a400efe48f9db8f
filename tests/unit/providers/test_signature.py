"""Webhook signature verification, with headers built exactly the way Stripe builds them."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from payguard.api.problems import http_status
from payguard.config import load_settings
from payguard.providers import StripeProvider, WebhookSignatureError
from payguard.providers.simulator import sign_payload

SECRET = "whsec_unit_test_secret"
PAYLOAD = json.dumps({"id": "evt_1", "object": "event", "type": "checkout.session.completed",
                      "data": {"object": {"id": "cs_test_1", "metadata": {"a": "b"}}}}).encode()


def stripe_v1(payload: bytes, secret: str, t: int) -> str:
    """Stripe's scheme: hex HMAC-SHA256 of ``"{t}.{raw body}"`` keyed with the secret."""
    return hmac.new(secret.encode(), f"{t}.".encode() + payload, hashlib.sha256).hexdigest()


@pytest.fixture
def provider(tmp_path: Path) -> Iterator[StripeProvider]:
    import asyncio

    p = StripeProvider(load_settings(data_dir=tmp_path, stripe_webhook_secret=SECRET))
    yield p
    asyncio.run(p.close())


def test_accepts_a_stripe_header_with_several_v1(provider: StripeProvider) -> None:
    t = int(time.time())
    header = (f"t={t},v1={stripe_v1(PAYLOAD, 'whsec_rolled_old', t)},"
              f"v1={stripe_v1(PAYLOAD, SECRET, t)},v0=ignored")
    event = provider.construct_event(PAYLOAD, header)
    assert event == json.loads(PAYLOAD)
    assert type(event) is dict and type(event["data"]["object"]) is dict


def test_simulator_signs_like_stripe(provider: StripeProvider) -> None:
    t = int(time.time())
    assert sign_payload(PAYLOAD, SECRET, t) == f"t={t},v1={stripe_v1(PAYLOAD, SECRET, t)}"
    assert provider.construct_event(PAYLOAD, sign_payload(PAYLOAD, SECRET))["id"] == "evt_1"


@pytest.mark.parametrize("header", [
    None,
    "",
    "garbage",
    "t=notanumber,v1=00",
    "v1={good}",                                   # no timestamp
    "t={now},v1={wrong_secret}",
    "t={now},v1={good}0",                          # altered signature
    "t={stale},v1={stale_sig}",                    # outside the 300 s tolerance
])
def test_rejects_missing_bad_and_stale(provider: StripeProvider, header: str | None) -> None:
    now = int(time.time())
    if header is not None:
        header = header.format(
            now=now, good=stripe_v1(PAYLOAD, SECRET, now),
            wrong_secret=stripe_v1(PAYLOAD, "whsec_other", now),
            stale=now - 301, stale_sig=stripe_v1(PAYLOAD, SECRET, now - 301))
    with pytest.raises(WebhookSignatureError) as info:
        provider.construct_event(PAYLOAD, header)
    assert (http_status(info.value), info.value.code) == (400, "INVALID_SIGNATURE")


def test_rejects_a_tampered_body(provider: StripeProvider) -> None:
    header = sign_payload(PAYLOAD, SECRET)
    with pytest.raises(WebhookSignatureError):
        provider.construct_event(PAYLOAD.replace(b"cs_test_1", b"cs_test_2"), header)


def test_within_tolerance_is_accepted(provider: StripeProvider) -> None:
    t = int(time.time()) - 290
    assert provider.construct_event(PAYLOAD, f"t={t},v1={stripe_v1(PAYLOAD, SECRET, t)}")
