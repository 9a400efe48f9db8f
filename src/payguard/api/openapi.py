"""The OpenAPI document, made to tell the truth.

FastAPI derives request schemas from the routes but knows nothing of what the handlers
return (they build ``Response`` bytes themselves, for byte-exact idempotent replays), of the
bearer tokens (checked before routing), of ``Idempotency-Key``, or of the problem+json
errors. This module adds all of that from one table, ``OPERATIONS``: per operation who may
call it, its success status and schema, whether it takes an idempotency key, and the error
statuses it can answer (each an ``application/problem+json`` ``Problem``). The Schemathesis
test (``tests/e2e/test_contract_fuzz.py``) holds the server to this document.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from payguard.api.schemas import PURCHASE_STATUSES
from payguard.idempotency.keys import MAX_KEY_LENGTH

__all__ = ["OPERATIONS", "install_openapi"]

PROBLEM_JSON = "application/problem+json"

Auth = Literal["admin", "user", "any", "none"]
Idem = Literal["required", "optional", "none"]

# ---- schemas -----------------------------------------------------------------------------

_STR = {"type": "string"}
_INT = {"type": "integer"}
_TS = {"type": "string", "format": "date-time"}


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    return {"anyOf": [schema, {"type": "null"}]}


def _obj(required: dict[str, Any], optional: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"type": "object", "required": sorted(required),
            "properties": {**required, **(optional or {})}}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _list(name: str) -> dict[str, Any]:
    return {"type": "array", "items": _ref(name)}



SCHEMAS: dict[str, dict[str, Any]] = {
    "Problem": _obj(
        {"type": _STR, "title": _STR, "status": _INT, "code": _STR, "detail": _STR},
        {"errors": {"type": "array", "items": _obj(
            {"loc": {"type": "array", "items": {"type": ["string", "integer"]}},
             "msg": _STR})}}),
    "Me": _obj({"id": _STR, "email": _STR, "name": _nullable(_STR)}),
    "CreatedUser": _obj({"id": _STR, "email": _STR, "name": _nullable(_STR),
                         "token": _nullable(_STR), "token_already_shown": {"type": "boolean"}}),
    "RotatedToken": _obj({"id": _STR, "token": _nullable(_STR),
                          "token_already_shown": {"type": "boolean"}}),
    "Wallet": _obj({"currency": _STR, "balance": _INT}),
    "Entry": _obj({"id": _STR, "amount": _INT, "balance_after": _INT, "kind": _STR,
                   "purchase_id": _nullable(_STR), "reason": _nullable(_STR),
                   "created_at": _TS}),
    "Entries": _obj({"entries": _list("Entry"), "next_cursor": _nullable(_STR)}),
    "Adjustment": _obj({"balance": _INT, "entry": _ref("Entry")}, {"currency": _STR}),
    "Product": _obj({"id": _STR, "sku": _STR, "name": _STR, "price": _INT, "currency": _STR,
                     "stock": _INT}),
    "Program": _obj({"id": _STR, "title": _STR, "full_price": _INT, "currency": _STR,
                     "class_rep_limit": _INT, "class_rep_taken": _INT,
                     "class_rep_discount": _INT, "early_bird_discount": _INT,
                     "early_bird_deadline": _nullable(_TS)}),
    "Purchase": _obj({
        "id": _STR, "order_number": _STR,
        "kind": {"type": "string", "enum": ["product", "program", "topup"]},
        "status": {"type": "string", "enum": PURCHASE_STATUSES},
        "payment_method": {"type": "string", "enum": ["wallet", "card"]},
        "quantity": _INT, "amount": _INT, "currency": _STR,
        "pricing": _obj({"full_price": _INT, "class_rep_discount": _INT,
                         "early_bird_discount": _INT, "final_price": _INT}),
        "is_class_rep": {"type": "boolean"}, "items": {"type": "array", "items": _STR},
        "receipt_number": _nullable(_STR), "provider_session_id": _nullable(_STR),
        "card": _nullable(_obj({"brand": _nullable(_STR), "last4": _nullable(_STR)})),
        "created_at": _TS, "completed_at": _nullable(_TS)}),
    "CheckoutSession": _obj({"session_id": _STR, "url": _nullable(_STR),
                             "purchase_id": _STR, "order_number": _STR, "amount": _INT,
                             "currency": _STR, "existing": {"type": "boolean"}}),
    "Receipt": _obj({"number": _STR, "purchase_id": _STR, "amount": _INT, "currency": _STR,
                     "issued_at": _TS}),
    "Locks": _obj({"backend": _STR, "active": _INT, "acquired_total": _INT,
                   "timeouts_total": _INT, "avg_wait_ms": {"type": "number"},
                   "max_wait_ms": {"type": "number"}, "health": _STR,
                   "held": {"type": "array", "items": _obj(
                       {"key": _STR, "fencing_token": _INT, "expires_at": _STR})}}),
    "Sequence": _obj({"series": _STR, "period": _STR, "last_value": _INT,
                      "next_number": _STR}),
    "Audit": _obj({"ok": {"type": "boolean"}, "wallets_checked": _INT,
                   "problems": {"type": "array", "items": _obj({"kind": _STR,
                                                                "detail": _STR})}}),
    "Reconcile": _obj({"checked": _INT, "completed": _INT, "failed": _INT, "expired": _INT,
                       "released": _INT}, {"skipped": {"type": "boolean"}}),
    "Mail": _obj({"id": _STR, "kind": _STR, "recipient": _STR, "subject": _STR,
                  "body": _STR, "created_at": _TS}),
    "WebhookAck": _obj({"received": {"type": "boolean"}, "duplicate": {"type": "boolean"}}),
    "Health": _obj({"status": {"type": "string", "enum": ["ok", "degraded"]},
                    "database": _STR, "redis": _STR}),
}

# ---- operations --------------------------------------------------------------------------

#: What each error status means (the ``code``s it carries).
ERRORS: dict[int, tuple[str, ...]] = {
    400: ("IDEMPOTENCY_KEY_MISSING", "IDEMPOTENCY_KEY_INVALID", "INSUFFICIENT_BALANCE",
          "INVALID_SIGNATURE"),
    401: ("UNAUTHENTICATED",),
    403: ("FORBIDDEN",),
    404: ("NOT_FOUND",),
    409: ("REQUEST_IN_PROGRESS", "PAYMENT_IN_PROGRESS", "OUT_OF_STOCK",
          "CLASS_REP_LIMIT_REACHED", "ALREADY_PURCHASED", "INVALID_STATE", "CONFLICT"),
    413: ("PAYLOAD_TOO_LARGE",),
    422: ("IDEMPOTENCY_KEY_REUSED", "VALIDATION_ERROR"),
    429: ("LIMIT_REACHED",),
    500: ("INTERNAL_ERROR",),
    503: ("LOCK_TIMEOUT", "OVERLOADED", "PROVIDER_UNAVAILABLE"),
}


@dataclass(frozen=True)
class Op:
    auth: Auth
    ok: tuple[int, ...]
    schema: dict[str, Any] | None
    idem: Idem = "none"
    errors: tuple[int, ...] = ()


_USER: Auth = "user"
_ADMIN: Auth = "admin"
_WRITE = (409, 503)  # a write can meet a lock or a full queue (and unique values)
_PROVIDER = (503,)

OPERATIONS: dict[tuple[str, str], Op] = {
    ("GET", "/healthz"): Op("none", (200, 503), _ref("Health")),
    ("GET", "/api/me"): Op(_USER, (200,), _ref("Me")),
    ("GET", "/api/wallet"): Op(_USER, (200,), _ref("Wallet")),
    ("GET", "/api/wallet/entries"): Op(_USER, (200,), _ref("Entries"), errors=(422,)),
    ("GET", "/api/products"): Op(_USER, (200,), _list("Product")),
    ("GET", "/api/products/{product_id}"): Op(_USER, (200,), _ref("Product"), errors=(404,)),
    ("GET", "/api/programs"): Op(_USER, (200,), _list("Program")),
    ("GET", "/api/programs/{program_id}"): Op(_USER, (200,), _ref("Program"), errors=(404,)),
    ("POST", "/api/purchases"): Op(_USER, (201,), _ref("Purchase"), "required",
                                   (400, 404, 409, 503)),
    ("GET", "/api/purchases"): Op(_USER, (200,), _list("Purchase"), errors=(422,)),
    ("GET", "/api/purchases/{purchase_id}"): Op(_USER, (200,), _ref("Purchase"),
                                                errors=(404,)),
    ("POST", "/api/purchases/{purchase_id}/cancel"): Op(
        _USER, (200,), _ref("Purchase"), "optional", (404, *_WRITE)),
    ("GET", "/api/receipts/{number}"): Op(_USER, (200,), _ref("Receipt"), errors=(404,)),
    ("POST", "/api/checkout/sessions"): Op(_USER, (200, 201), _ref("CheckoutSession"),
                                           "required", (404, 429, *_WRITE)),
    ("GET", "/api/mailbox"): Op(_USER, (200,), _list("Mail"), errors=(422,)),
    ("POST", "/api/webhooks/stripe"): Op("none", (200,), _ref("WebhookAck"),
                                         errors=(400, 413, 422, 503)),
    ("POST", "/api/admin/users"): Op(_ADMIN, (201,), _ref("CreatedUser"), "optional",
                                     _WRITE),
    ("POST", "/api/admin/users/{user_id}/token"): Op(_ADMIN, (201,), _ref("RotatedToken"),
                                                    "required", (404, *_WRITE)),
    ("POST", "/api/admin/products"): Op(_ADMIN, (201,), _ref("Product"), "optional", _WRITE),
    ("POST", "/api/admin/products/{product_id}/items"): Op(
        _ADMIN, (200,), _ref("Product"), "optional", (404, *_WRITE)),
    ("POST", "/api/admin/programs"): Op(_ADMIN, (201,), _ref("Program"), "optional", _WRITE),
    ("POST", "/api/admin/wallets/{user_id}/adjustments"): Op(
        _ADMIN, (201,), _ref("Adjustment"), "required", (400, 404, *_WRITE)),
    ("POST", "/api/admin/purchases/{purchase_id}/refund"): Op(
        _ADMIN, (200,), _ref("Purchase"), "required", (404, *_WRITE)),
    ("GET", "/api/admin/sequences"): Op(_ADMIN, (200,), _list("Sequence")),
    ("GET", "/api/admin/audit"): Op(_ADMIN, (200,), _ref("Audit")),
    ("GET", "/api/admin/purchases/stuck"): Op(_ADMIN, (200,), _list("Purchase"),
                                              errors=(422,)),
    ("POST", "/api/admin/reconcile"): Op(_ADMIN, (200,), _ref("Reconcile"), "optional",
                                         (422, *_WRITE)),
    ("GET", "/api/admin/locks"): Op(_ADMIN, (200,), _ref("Locks")),
    ("GET", "/api/session"): Op("any", (200,), None),
}


def _default_op(method: str, path: str, operation: dict[str, Any]) -> Op:
    """An operation missing from the table: described from its route (its success schema
    comes from its ``response_model``) and the rules every payguard route follows."""
    ok = tuple(int(s) for s in operation.get("responses", {}) if s.startswith("2")) or (200,)
    if path.startswith("/api/webhooks/"):
        return Op("none", ok, None, errors=(400, 401, 413, 422, 503))
    errors: list[int] = []
    if "{" in path:
        errors.append(404)
    if operation.get("parameters") or operation.get("requestBody"):
        errors.append(422)
    if method == "POST":
        errors += [409, 503]
    return Op(_ADMIN if path.startswith("/api/admin/") else _USER, ok, None,
              errors=tuple(errors))

_KEY_PARAM = {
    "name": "Idempotency-Key", "in": "header",
    "description": "Makes the request safe to retry: the same key answers the stored "
                   "response (header `Idempotent-Replayed: true`). Printable ASCII, sent once.",
    "schema": {"type": "string", "minLength": 1, "maxLength": MAX_KEY_LENGTH,
               "pattern": r"^[\x20-\x7e]*[\x21-\x7e][\x20-\x7e]*$"},
}


def _statuses(method: str, op: Op) -> set[int]:
    found = set(op.errors) | {500}
    if op.auth != "none":
        found |= {401} if op.auth == "any" else {401, 403}
    if method == "POST":
        found |= {413, 422}
    if op.idem != "none":
        found |= {400, 409, 422, 429}
    return found


def _problem(status: int) -> dict[str, Any]:
    codes = ERRORS[status]
    schema = {"allOf": [_ref("Problem"), {"type": "object", "properties": {
        "code": {"type": "string", "enum": list(codes)}}}]}
    return {"description": "one of: " + ", ".join(codes),
            "content": {PROBLEM_JSON: {"schema": schema}}}


def _apply(method: str, operation: dict[str, Any], op: Op) -> None:
    responses: dict[str, Any] = {}
    for status in op.ok:
        generated = operation.get("responses", {}).get(str(status))
        if op.schema is None and generated is not None:
            responses[str(status)] = generated  # FastAPI's, from the route's response_model
            continue
        body = op.schema if status < 300 or op.schema == _ref("Health") else None
        responses[str(status)] = {"description": "success" if status < 300 else "degraded",
                                  "content": {"application/json": {"schema": body or {}}}}
    for status in sorted(_statuses(method, op)):
        if str(status) not in responses:
            responses[str(status)] = _problem(status)
    operation["responses"] = responses
    if op.auth != "none":
        operation["security"] = [{"bearerAuth": []}]
    if op.idem != "none":
        params = [p for p in operation.get("parameters", [])
                  if p.get("name", "").lower() != "idempotency-key"]
        operation["parameters"] = [*params, {**_KEY_PARAM, "required": op.idem == "required"}]


def build_openapi(app: FastAPI) -> dict[str, Any]:
    doc = get_openapi(title=app.title, version=app.version, routes=app.routes,
                      description=app.description)
    schemas = doc.setdefault("components", {}).setdefault("schemas", {})
    schemas.update(SCHEMAS)
    doc["components"]["securitySchemes"] = {"bearerAuth": {
        "type": "http", "scheme": "bearer",
        "description": "the admin token (PAYGUARD_ADMIN_TOKEN) or a user token"}}
    for path, item in doc["paths"].items():
        for method, operation in item.items():
            op = (OPERATIONS.get((method.upper(), path))
                  or _default_op(method.upper(), path, operation))
            _apply(method.upper(), operation, op)
    return doc


def install_openapi(app: FastAPI) -> None:
    """Serve ``build_openapi``'s document (built once, on first request)."""
    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = build_openapi(app)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
