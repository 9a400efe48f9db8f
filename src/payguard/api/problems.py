"""RFC 9457 problem details for every error, rendered once to bytes.

Rendering to bytes (not a ``JSONResponse`` built later) matters: an idempotent request's
4xx is stored and replayed byte for byte, so the first answer and every replay must come
from the same bytes.
"""

from __future__ import annotations

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response
from starlette.routing import Match

from payguard.errors import PayguardError, ValidationFailed
from payguard.fastapi.idempotency import to_response
from payguard.idempotency.responses import dumps
from payguard.problems import PROBLEM_JSON, STATUS_BY_CODE, http_status

# The service renders problems with the library's own functions (one encoding of
# problem+json for both), under the names its modules have always used.
from payguard.problems import problem as render_problem
from payguard.problems import problem_details as render_error

__all__ = [
    "PROBLEM_JSON",
    "STATUS_BY_CODE",
    "dumps",
    "http_status",
    "problem_response",
    "render_error",
    "render_problem",
    "to_response",
]

_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE")

_HTTP_CODES = {
    401: ("UNAUTHENTICATED", "Authentication required"),
    403: ("FORBIDDEN", "Forbidden"),
    404: ("NOT_FOUND", "Not found"),
    405: ("METHOD_NOT_ALLOWED", "Method not allowed"),
    413: ("PAYLOAD_TOO_LARGE", "Payload too large"),
}


def problem_response(exc: PayguardError) -> Response:
    return to_response(render_error(exc))


async def payguard_error_handler(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, PayguardError)
    return problem_response(exc)


async def validation_error_handler(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    errors = [
        {"loc": [str(p) for p in e.get("loc", ())], "msg": str(e.get("msg", "invalid"))}
        for e in exc.errors()
    ]
    return problem_response(ValidationFailed("the request is malformed", errors=errors))


async def http_error_handler(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    if exc.status_code == 400:
        # FastAPI's body reader answers 400 for a body json.loads cannot take (invalid
        # UTF-8, nesting past the recursion limit, an integer of more than 4300 digits):
        # to the contract that is a malformed body like any other.
        return problem_response(ValidationFailed(
            "the request body could not be parsed",
            errors=[{"loc": ["body"], "msg": "not parseable as JSON"}]))
    code, title = _HTTP_CODES.get(exc.status_code, ("HTTP_ERROR", "HTTP error"))
    detail = str(exc.detail) if exc.detail else title
    if exc.status_code == 404:
        detail = "no such endpoint"
    response = to_response(render_problem(exc.status_code, code, title, detail))
    response.headers.update(exc.headers or {})
    if exc.status_code == 405:
        # RFC 9110: Allow lists every method of the path. Starlette names only those of
        # the first route that matched, and GET and POST of a path are separate routes.
        response.headers["Allow"] = ", ".join(_allowed_methods(request))
    return response


def _allowed_methods(request: Request) -> list[str]:
    routes = request.app.router.routes
    return [method for method in _METHODS if any(
        route.matches({**request.scope, "method": method})[0] is Match.FULL
        for route in routes)]


async def unhandled_error_handler(_request: Request, _exc: Exception) -> Response:
    return problem_response(PayguardError("an unexpected error occurred; it has been logged"))
