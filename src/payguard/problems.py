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

__all__ = ["PROBLEM_JSON", "problem", "problem_details"]

PROBLEM_JSON = "application/problem+json"


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
    """``exc`` (its status, code, title, detail, extras, Retry-After) as problem+json."""
    return problem(exc.status, exc.code, exc.title, exc.detail,
                   retry_after=exc.retry_after, extra=exc.extra)
