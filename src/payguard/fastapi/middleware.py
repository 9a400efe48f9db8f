"""``IdempotencyMiddleware``: Idempotency-Key for any ASGI app (Starlette, FastAPI, ...).

For routes whose code you do not want to touch. It claims the key, runs the app with the
buffered body, stores the response (a 2xx-4xx; a 5xx gives the key back) and replays it to
retries with ``Idempotent-Replayed: true``; a concurrent duplicate gets ``409``, the key
with another body ``422``.

The guarantee is weaker than the ``Payguard.idempotent`` dependency's: the app commits its
own writes, and the response is stored in a transaction after that. A process that dies
between the two leaves the key in progress; after ``lock_timeout`` (or, with a heartbeat,
the holder lease) a retry runs the request again. Use the dependency where the effects
must happen exactly once even across a crash.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from payguard.errors import PayguardError
from payguard.fastapi.idempotency import to_response
from payguard.idempotency.guard import IdempotencyGuard, RenderError
from payguard.idempotency.keys import parse_key
from payguard.idempotency.store import Claim, StoredResponse
from payguard.problems import problem_details

__all__ = ["IdempotencyMiddleware", "PrincipalOf"]

#: The caller of a request from its ASGI scope (e.g. from its Authorization header);
#: None lets the request through unguarded (the app then refuses it, e.g. 401).
PrincipalOf = Callable[[Scope], Awaitable[str | None]]


class _NotStored(Exception):
    """The app answered 5xx: give the key back, still send the answer."""

    def __init__(self, response: StoredResponse) -> None:
        super().__init__(response.status)
        self.response = response


class IdempotencyMiddleware:
    """ASGI middleware running requests with an ``Idempotency-Key`` through ``guard``.

    ``methods``: the methods it guards (others pass through). ``required``: refuse a
    guarded method without a key (400) instead of passing it through. ``paths``: path
    prefixes to guard (default: all).
    """

    def __init__(self, app: ASGIApp, *, guard: IdempotencyGuard, principal: PrincipalOf,
                 methods: Collection[str] = ("POST", "PATCH"), required: bool = False,
                 paths: Collection[str] = ("/",),
                 render_error: RenderError = problem_details) -> None:
        self.app = app
        self.guard = guard
        self.principal = principal
        self.methods = {m.upper() for m in methods}
        self.required = required
        self.paths = tuple(paths)
        self.render_error = render_error

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (scope["type"] != "http" or scope["method"] not in self.methods
                or not str(scope["path"]).startswith(self.paths)):
            await self.app(scope, receive, send)
            return
        values = Headers(scope=scope).getlist("idempotency-key")
        if not values and not self.required:
            await self.app(scope, receive, send)
            return
        try:
            key = parse_key(values, required=True)
        except PayguardError as exc:
            await to_response(self.render_error(exc))(scope, receive, send)
            return
        who = await self.principal(scope)
        if who is None or key is None:
            await self.app(scope, receive, send)
            return
        body = await _read_body(receive)

        async def handler(_claim: Claim) -> StoredResponse:
            response = await _run(self.app, scope, body)
            if response.status >= 500:
                raise _NotStored(response)
            return response

        try:
            outcome = await self.guard.execute_phased(
                principal=who, key=key, method=scope["method"], path=scope["path"],
                body=body, handler=handler)
        except _NotStored as exc:
            await to_response(exc.response)(scope, receive, send)
            return
        except PayguardError as exc:
            await to_response(self.render_error(exc))(scope, receive, send)
            return
        await to_response(outcome.response, replayed=outcome.replayed)(scope, receive, send)


async def _read_body(receive: Receive) -> bytes:
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


async def _run(app: ASGIApp, scope: Scope, body: bytes) -> StoredResponse:
    """Call ``app`` with ``body`` and collect what it sends."""
    sent = False
    status = 500
    headers: dict[str, str] = {}
    chunks: list[bytes] = []

    async def receive() -> Message:
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: Message) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = int(message["status"])
            for name, value in message.get("headers", []):
                headers[name.decode("latin-1").lower()] = value.decode("latin-1")
        elif message["type"] == "http.response.body":
            chunks.append(message.get("body", b""))

    await app(scope, receive, send)
    headers.pop("content-length", None)
    return StoredResponse(status=status, body=b"".join(chunks), headers=headers)

