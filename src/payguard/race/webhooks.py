"""Stripe-style webhook events and signatures, so the harness can deliver its own."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
import uuid
from typing import Any

__all__ = ["event", "sign"]


def sign(secret: str, payload: bytes, timestamp: int | None = None) -> str:
    """The ``Stripe-Signature`` header: ``t=<unix>,v1=<hex HMAC-SHA256(secret, "t.body")>``."""
    t = int(time.time()) if timestamp is None else timestamp
    mac = hmac.new(secret.encode(), f"{t}.".encode() + payload, hashlib.sha256).hexdigest()
    return f"t={t},v1={mac}"


def event(kind: str, session: dict[str, Any]) -> tuple[str, bytes]:
    """A new event id and its JSON body carrying ``session`` as ``data.object``."""
    event_id = f"evt_race_{uuid.uuid4().hex}"
    body = {
        "id": event_id,
        "object": "event",
        "api_version": "2024-06-20",
        "created": int(time.time()),
        "livemode": False,
        "pending_webhooks": 1,
        "type": kind,
        "data": {"object": session},
    }
    return event_id, json.dumps(body, separators=(",", ":")).encode()
