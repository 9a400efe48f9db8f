"""problem+json rendering: RFC 9457 fields, the contract's codes, Retry-After, stable bytes."""

from __future__ import annotations

import json

import pytest

from payguard.api.problems import PROBLEM_JSON, dumps, render_error, to_response
from payguard.errors import (
    InsufficientBalance,
    LockTimeout,
    NotFound,
    PayguardError,
    PaymentInProgress,
    ProviderUnavailable,
    RequestInProgress,
    ValidationFailed,
)


@pytest.mark.parametrize(("exc", "status", "code", "retry_after"), [
    (InsufficientBalance("x"), 400, "INSUFFICIENT_BALANCE", None),
    (NotFound("x"), 404, "NOT_FOUND", None),
    (RequestInProgress("x"), 409, "REQUEST_IN_PROGRESS", "1"),
    (PaymentInProgress("x"), 409, "PAYMENT_IN_PROGRESS", "1"),
    (LockTimeout("x"), 503, "LOCK_TIMEOUT", "1"),
    (ProviderUnavailable("x"), 503, "PROVIDER_UNAVAILABLE", "2"),
    (PayguardError("boom"), 500, "INTERNAL_ERROR", None),
])
def test_each_error_renders_its_status_code_and_retry_after(
        exc: PayguardError, status: int, code: str, retry_after: str | None) -> None:
    stored = render_error(exc)
    body = json.loads(stored.body)
    assert stored.status == body["status"] == status
    assert body["code"] == code and body["detail"] == exc.detail and body["title"]
    assert body["type"].endswith(code.lower().replace("_", "-"))
    assert stored.headers["content-type"] == PROBLEM_JSON
    assert stored.headers.get("retry-after") == retry_after


def test_validation_errors_list_each_location() -> None:
    exc = ValidationFailed("bad", errors=[{"loc": ["body", "amount"], "msg": "must be > 0"}])
    body = json.loads(render_error(exc).body)
    assert body["errors"] == [{"loc": ["body", "amount"], "msg": "must be > 0"}]
    assert body["status"] == 422 and body["code"] == "VALIDATION_ERROR"


def test_rendering_is_byte_stable_for_replays() -> None:
    a, b = render_error(NotFound("no purchase 'p'")), render_error(NotFound("no purchase 'p'"))
    assert a.body == b.body
    assert dumps({"b": 1, "a": "é"}) == '{"b":1,"a":"é"}'.encode()


def test_a_replayed_response_is_marked_and_keeps_its_bytes() -> None:
    stored = render_error(LockTimeout("busy"))
    response = to_response(stored, replayed=True)
    assert response.status_code == 503 and response.body == stored.body
    assert response.headers["idempotent-replayed"] == "true"
    assert response.headers["retry-after"] == "1"
    assert response.headers["content-type"] == PROBLEM_JSON
