"""Responses as stored bytes: the one JSON encoding of payguard's answers.

Used by the API for every JSON response it sends or stores, and by the reconciler when it
completes a dead request's key: both produce the same bytes, so a replay is byte-identical
to what the request itself would have answered.
"""

from __future__ import annotations

import json
from typing import Any

from payguard.idempotency.store import StoredResponse

__all__ = ["JSON", "dumps", "json_response"]

JSON = "application/json"


def dumps(payload: Any) -> bytes:
    """Compact, UTF-8, stable: the bytes of every JSON body."""
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()


def json_response(payload: Any, status: int = 200) -> StoredResponse:
    """``payload`` as a JSON ``StoredResponse`` (what a guarded request returns)."""
    return StoredResponse(status=status, body=dumps(payload), headers={"content-type": JSON})
