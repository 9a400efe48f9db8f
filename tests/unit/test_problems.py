"""problem+json rendering: RFC 9457 fields, the contract's codes, Retry-After, stable bytes."""

from __future__ import annotations

import importlib
import json
import pkgutil

import pytest

from payguard.api.problems import (
    PROBLEM_JSON,
    STATUS_BY_CODE,
    dumps,
    http_status,
    render_error,
    to_response,
)
from payguard.errors import (
    CommitOutcomeUnknown,
    Conflict,
    DatabaseUnavailable,
    InsufficientBalance,
    LimitReached,
    LockTimeout,
    NotFound,
    Overloaded,
    PayguardError,
    PaymentInProgress,
    ProviderUnavailable,
    RequestInProgress,
    ValidationFailed,
)
from payguard.ledger import CurrencyMismatch
from payguard.locks import LockBackendUnavailable, StaleFencingToken
from payguard.problems import problem_details
from payguard.providers import WebhookSignatureError


@pytest.mark.parametrize(("exc", "status", "code", "retry_after"), [
    (InsufficientBalance("x"), 400, "INSUFFICIENT_BALANCE", None),
    (NotFound("x"), 404, "NOT_FOUND", None),
    (RequestInProgress("x"), 409, "REQUEST_IN_PROGRESS", "1"),
    (PaymentInProgress("x"), 409, "PAYMENT_IN_PROGRESS", "1"),
    (LockTimeout("x"), 503, "LOCK_TIMEOUT", "1"),
    (ProviderUnavailable("x"), 503, "PROVIDER_UNAVAILABLE", "2"),
    (LimitReached("x", retry_after=60), 429, "LIMIT_REACHED", "60"),
    (DatabaseUnavailable("x"), 503, "DATABASE_UNAVAILABLE", "1"),
    (Overloaded("x"), 503, "OVERLOADED", "1"),
    (CommitOutcomeUnknown("x"), 503, "COMMIT_OUTCOME_UNKNOWN", "1"),
    (LockBackendUnavailable("x"), 503, "LOCK_TIMEOUT", "2"),
    (StaleFencingToken("x"), 409, "STALE_FENCING_TOKEN", "1"),
    (WebhookSignatureError("x"), 400, "INVALID_SIGNATURE", None),
    (CurrencyMismatch("x"), 500, "CURRENCY_MISMATCH", None),
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


def _error_classes() -> list[type[PayguardError]]:
    """Every PayguardError subclass in the package (each module imported first)."""
    import payguard

    for module in pkgutil.walk_packages(payguard.__path__, "payguard."):
        if not module.name.endswith("__main__") and ".migrations" not in module.name:
            importlib.import_module(module.name)
    found, todo = [], [PayguardError]
    while todo:
        cls = todo.pop()
        found.append(cls)
        todo.extend(cls.__subclasses__())
    # Only payguard's own: a test's throwaway subclass is not part of the contract.
    return [cls for cls in found if cls.__module__.startswith("payguard.")]


def test_every_error_code_has_its_status_in_the_api_and_errors_carry_none() -> None:
    classes = _error_classes()
    assert len(classes) >= 25  # the walk found the tree, not just the base
    for cls in classes:
        assert cls.code in STATUS_BY_CODE, f"add {cls.code} to api.problems.STATUS_BY_CODE"
        assert not any("status" in vars(k) for k in cls.__mro__ if k is not object), (
            f"{cls.__name__} carries an HTTP status; map its code in STATUS_BY_CODE")
    assert set(STATUS_BY_CODE) == {cls.code for cls in classes}  # no stale rows


def test_an_unknown_code_is_a_500() -> None:
    class Odd(PayguardError):
        code = "SOMETHING_NEW"

    assert http_status(Odd()) == 500


def test_an_applications_own_error_names_its_status_or_takes_its_ancestors() -> None:
    class SoldOut(PayguardError):
        status, code, title = 409, "SOLD_OUT", "Sold out"

    class Gone(Conflict):
        code, title = "GONE", "Gone"

    assert (http_status(SoldOut()), http_status(Gone())) == (409, 409)
    assert json.loads(problem_details(SoldOut("x")).body)["status"] == 409


def test_the_library_and_the_service_render_payguards_errors_to_the_same_bytes() -> None:
    for cls in _error_classes():
        exc = cls("same detail")
        assert problem_details(exc) == render_error(exc), cls.__name__
