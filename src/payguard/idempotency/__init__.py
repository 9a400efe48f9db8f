"""Stripe-style idempotency keys (draft-ietf-httpapi-idempotency-key-header).

- ``keys``: header validation, request fingerprints, derived outbound keys.
- ``store``: the table primitives (claim / finish / advance / release / reap).
- ``guard``: ``IdempotencyGuard``, which runs a request at most once per (principal, key).
"""

from payguard.idempotency.guard import IdempotencyGuard, Outcome
from payguard.idempotency.keys import fingerprint, outbound_key, parse_key
from payguard.idempotency.store import Claim, StoredResponse

__all__ = [
    "Claim",
    "IdempotencyGuard",
    "Outcome",
    "StoredResponse",
    "fingerprint",
    "outbound_key",
    "parse_key",
]
