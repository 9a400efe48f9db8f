"""Idempotency-Key parsing, request fingerprints and derived outbound keys."""

from __future__ import annotations

import hashlib
import json

from payguard.errors import IdempotencyKeyInvalid, IdempotencyKeyMissing

__all__ = ["MAX_KEY_LENGTH", "canonical_json", "fingerprint", "outbound_key", "parse_key"]

MAX_KEY_LENGTH = 255


def parse_key(value: str | list[str] | None, *, required: bool) -> str | None:
    """Validate the header: one value, printable ASCII, 1..255 characters, not blank.

    ``value`` may be every value the header was sent with: a repeated header is refused
    rather than one of its values silently chosen.
    """
    if isinstance(value, list):
        if len(value) > 1:
            raise IdempotencyKeyInvalid("send the Idempotency-Key header once")
        value = value[0] if value else None
    if value is None:
        if required:
            raise IdempotencyKeyMissing("this request requires an Idempotency-Key header")
        return None
    if (not value.strip() or len(value) > MAX_KEY_LENGTH
            or not all(0x20 <= ord(c) < 0x7F for c in value)):
        raise IdempotencyKeyInvalid(
            f"Idempotency-Key must be 1 to {MAX_KEY_LENGTH} printable ASCII characters"
        )
    return value


def canonical_json(body: bytes) -> bytes:
    """The body re-serialised with sorted keys and no spaces, so formatting doesn't matter."""
    if not body.strip():
        return b""
    try:
        parsed = json.loads(body)
    except ValueError:
        return body  # not JSON: compared byte for byte
    return json.dumps(parsed, sort_keys=True, separators=(",", ":"),
                      ensure_ascii=False).encode()


def fingerprint(method: str, path: str, body: bytes) -> str:
    """SHA-256 of the method, the path and the canonical JSON of the body: what a key is
    bound to, so the same key with another request is refused, not replayed."""
    digest = hashlib.sha256()
    for part in (method.upper().encode(), path.encode(), canonical_json(body)):
        digest.update(len(part).to_bytes(8, "big"))
        digest.update(part)
    return digest.hexdigest()


def outbound_key(purchase_id: str, step: str) -> str:
    """The key we send to the provider: derived from our ids, never the client's key."""
    return f"payguard:{purchase_id}:{step}"
