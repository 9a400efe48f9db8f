"""Errors the simulator answers with, in Stripe's JSON shape ``{"error": {...}}``."""

from __future__ import annotations

import json
from typing import Any

__all__ = ["StripeApiError", "invalid", "missing"]


class StripeApiError(Exception):
    """Raised inside simulator operations; rendered as Stripe renders API errors."""

    def __init__(self, status: int, type_: str, message: str, *, code: str | None = None,
                 param: str | None = None) -> None:
        super().__init__(message)
        self.status, self.type, self.message, self.code, self.param = (
            status, type_, message, code, param)

    def payload(self) -> dict[str, Any]:
        error: dict[str, Any] = {"type": self.type, "message": self.message}
        if self.code:
            error["code"] = self.code
        if self.param:
            error["param"] = self.param
        return {"error": error}

    def body(self) -> str:
        return json.dumps(self.payload())


def invalid(message: str, *, param: str | None = None, code: str | None = None) -> StripeApiError:
    return StripeApiError(400, "invalid_request_error", message, code=code, param=param)


def missing(kind: str, ident: str, *, param: str | None = None) -> StripeApiError:
    return StripeApiError(404, "invalid_request_error", f"No such {kind}: '{ident}'",
                          code="resource_missing", param=param)
