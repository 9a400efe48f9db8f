"""A request body limit enforced while the body streams in, before anything parses it.

Plain ASGI (no ``BaseHTTPMiddleware``) so the per-request cost is one header scan and a
counter. A declared ``Content-Length`` over the limit is refused before a byte of the body
is read; a chunked or lying body is refused as soon as the running count passes the limit,
so memory stays bounded by the limit whatever the client sends.
"""

from __future__ import annotations

from collections.abc import Sequence

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from payguard.api.problems import render_problem

__all__ = ["BodyLimitMiddleware", "PayloadTooLarge"]


class PayloadTooLarge(HTTPException):
    """Raised from ``receive`` when the body passes the limit. An ``HTTPException`` so
    FastAPI's body reader re-raises it untouched and the app's handler renders the 413."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"the request body is larger than this endpoint accepts "
                              f"({limit} bytes)")
        self.limit = limit


class BodyLimitMiddleware:
    """``limits`` maps path prefixes to byte limits (first match wins); else ``default``."""

    def __init__(self, app: ASGIApp, *, default: int,
                 limits: Sequence[tuple[str, int]] = ()) -> None:
        self.app = app
        self.default = default
        self.limits = tuple(limits)

    def limit_for(self, path: str) -> int:
        for prefix, limit in self.limits:
            if path.startswith(prefix):
                return limit
        return self.default

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit_for(scope["path"])
        for name, value in scope["headers"]:
            if name == b"content-length":
                # The server (h11/httptools) has already refused a malformed length.
                if int(value) > limit:
                    await _refuse(send, limit)
                    return
                break
        received = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise PayloadTooLarge(limit)
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except PayloadTooLarge:
            # Reached here only where no handler rendered it (e.g. a raw ASGI route).
            if not started:
                await _refuse(send, limit)


async def _refuse(send: Send, limit: int) -> None:
    problem = render_problem(
        413, "PAYLOAD_TOO_LARGE", "Payload too large",
        f"the request body is larger than this endpoint accepts ({limit} bytes)")
    await send({"type": "http.response.start", "status": 413, "headers": [
        (b"content-type", problem.headers["content-type"].encode()),
        (b"content-length", str(len(problem.body)).encode()),
        # No "Connection: close": the server then discards the rest of the body as it
        # arrives (bounded memory) instead of resetting the connection, which could make
        # the client lose this answer while it is still sending.
    ]})
    await send({"type": "http.response.body", "body": problem.body})
