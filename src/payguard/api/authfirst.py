"""Authentication before the body is read: an unauthenticated caller never gets its body
buffered or parsed, and learns nothing from validation errors (401 comes first).

Plain ASGI. The principal it finds is left in the request state for ``deps.get_principal``,
so each request is authenticated once.
"""

from __future__ import annotations

from starlette.routing import Match
from starlette.types import ASGIApp, Receive, Scope, Send

from payguard.api.problems import problem_response
from payguard.errors import PayguardError

__all__ = ["PRINCIPAL_STATE", "AuthFirstMiddleware", "bearer_token"]

#: Key in the ASGI ``state`` dict under which the authenticated ``Principal`` is kept.
PRINCIPAL_STATE = "auth_principal"

# Under /api/ but open: the provider signs webhooks instead, and the API docs are public.
_OPEN = ("/api/webhooks/", "/api/docs", "/api/openapi.json", "/api/static/")


def bearer_token(header: str | None) -> str | None:
    scheme, _, token = (header or "").partition(" ")
    return (token.strip() or None) if scheme.lower() == "bearer" else None


class AuthFirstMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope.get("path", "")
        if scope["type"] != "http" or not path.startswith("/api/") or path.startswith(_OPEN):
            await self.app(scope, receive, send)
            return
        header = None
        for name, value in scope["headers"]:
            if name == b"authorization":
                header = value.decode("latin-1")
                break
        ctx = scope["app"].state.ctx
        try:
            principal = await ctx.auth.authenticate(bearer_token(header))
        except PayguardError as exc:
            if not _routed(scope):  # let the app answer 404 for paths that don't exist
                await self.app(scope, receive, send)
                return
            await problem_response(exc)(scope, receive, send)
            return
        state = scope.setdefault("state", {})
        state[PRINCIPAL_STATE] = principal
        state["principal"] = principal.scope
        await self.app(scope, receive, send)


def _routed(scope: Scope) -> bool:
    """Whether some route of the app takes this path (checked only for refused callers)."""
    return any(route.matches(scope)[0] is not Match.NONE
               for route in scope["app"].router.routes)
