"""RFC 9457 problem details as stored bytes, without any web framework.

``problem_details(exc)`` is the default ``render_error`` of an ``IdempotencyGuard`` built by
an application (and of ``payguard.fastapi``): the 4xx a guarded request raised is stored in
exactly these bytes and replayed byte for byte. The reference service renders its own
errors in ``payguard.api.problems`` to the same shape.
"""

from __future__ import annotations

from typing import Any

from payguard.errors import PayguardError
from payguard.idempotency.responses import dumps
from payguard.idempotency.store import StoredResponse

__all__ = ["PROBLEM_JSON", "STATUS_BY_CODE", "http_status", "problem", "problem_details"]

PROBLEM_JSON = "application/problem+json"


#: The HTTP status of every error code payguard raises: the one place where its errors meet
#: HTTP (they carry a code and a title, never a status), for the reference service
#: (``payguard.api``) and for applications alike. A test walks the exception tree and fails
#: on a code missing here.
STATUS_BY_CODE: dict[str, int] = {
    "IDEMPOTENCY_KEY_MISSING": 400,
    "IDEMPOTENCY_KEY_INVALID": 400,
    "INSUFFICIENT_BALANCE": 400,
    "INVALID_SIGNATURE": 400,
    "UNAUTHENTICATED": 401,
    "FORBIDDEN": 403,
    "NOT_FOUND": 404,
    "CONFLICT": 409,
    "REQUEST_IN_PROGRESS": 409,
    "PAYMENT_IN_PROGRESS": 409,
    "OUT_OF_STOCK": 409,
    "CLASS_REP_LIMIT_REACHED": 409,
    "ALREADY_PURCHASED": 409,
    "INVALID_STATE": 409,
    "STALE_FENCING_TOKEN": 409,
    "IDEMPOTENCY_KEY_REUSED": 422,
    "VALIDATION_ERROR": 422,
    "LIMIT_REACHED": 429,
    "INTERNAL_ERROR": 500,
    "LOCK_NOT_OWNED": 500,
    "CURRENCY_MISMATCH": 500,
    "LOCK_TIMEOUT": 503,
    "OVERLOADED": 503,
    "PROVIDER_UNAVAILABLE": 503,
    "DATABASE_UNAVAILABLE": 503,
    "COMMIT_OUTCOME_UNKNOWN": 503,
}


def http_status(exc: PayguardError) -> int:
    """The status ``exc`` is answered with: its code's row in ``STATUS_BY_CODE``.

    An application's own error class, with a code payguard does not know, either names its
    status in a class attribute (``status = 409``) or takes its nearest payguard ancestor's
    (a ``Conflict`` subclass is a 409); the base ``PayguardError`` is a 500.
    """
    for cls in type(exc).__mro__:
        own = vars(cls)
        status = STATUS_BY_CODE.get(own.get("code", ""))
        if status is None and "status" in own:
            status = int(own["status"])
        if status is not None:
            return status
    return 500


def problem(status: int, code: str, title: str, detail: str, *,
            retry_after: int | None = None,
            extra: dict[str, Any] | None = None) -> StoredResponse:
    """A problem+json response: ``type``, ``title``, ``status``, ``code``, ``detail`` and
    any ``extra`` members; ``Retry-After`` when ``retry_after`` is set."""
    body: dict[str, Any] = {
        "type": f"https://payguard.dev/problems/{code.lower().replace('_', '-')}",
        "title": title, "status": status, "code": code, "detail": detail,
    }
    body.update({k: v for k, v in (extra or {}).items() if k not in body})
    headers = {"content-type": PROBLEM_JSON}
    if retry_after is not None:
        headers["retry-after"] = str(retry_after)
    return StoredResponse(status=status, body=dumps(body), headers=headers)


def problem_details(exc: PayguardError) -> StoredResponse:
    """``exc`` (its code's status, code, title, detail, extras, Retry-After) as
    problem+json."""
    return problem(http_status(exc), exc.code, exc.title, exc.detail,
                   retry_after=exc.retry_after, extra=exc.extra)
