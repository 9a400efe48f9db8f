"""``IdempotentRequest``: what the ``Payguard.idempotent`` dependency hands a route.

The route calls ``await idem.run(effects)``. The key is claimed (a concurrent duplicate gets
``409``, the same key with another body ``422``), ``effects(uow)`` runs in a transaction,
and its result is stored as the key's response **in that same transaction**: the writes and
the stored answer commit together or not at all. A retry with the key gets the stored bytes
back with ``Idempotent-Replayed: true``; the effects never run twice.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from starlette.responses import Response

from payguard.errors import PayguardError
from payguard.idempotency.guard import IdempotencyGuard, RenderError
from payguard.idempotency.responses import json_response
from payguard.idempotency.store import Claim, StoredResponse
from payguard.store.uow import UnitOfWork

__all__ = ["REPLAY_HEADER", "Effects", "IdempotentRequest", "to_response"]

REPLAY_HEADER = "Idempotent-Replayed"

#: A route's writes: returns a JSON-able payload, a ``StoredResponse``, or a Response.
Effects = Callable[[UnitOfWork], Awaitable[Any]]


def to_response(stored: StoredResponse, *, replayed: bool = False) -> Response:
    """A Starlette response with ``stored``'s status, headers and exact bytes; a replay
    carries ``Idempotent-Replayed: true``."""
    headers = {k: v for k, v in stored.headers.items() if k != "content-type"}
    if replayed:
        headers[REPLAY_HEADER] = "true"
    body = stored.body if replayed or stored.first_body is None else stored.first_body
    return Response(content=body, status_code=stored.status, headers=headers,
                    media_type=stored.headers.get("content-type", "application/json"))


def _stored(result: Any, status_code: int) -> StoredResponse:
    if isinstance(result, StoredResponse):
        return result
    if isinstance(result, Response):
        headers = {k: v for k, v in result.headers.items() if k != "content-length"}
        return StoredResponse(status=result.status_code, body=bytes(result.body),
                              headers=headers)
    return json_response(result, status=status_code)


class IdempotentRequest:
    """One request under its ``Idempotency-Key`` (built by ``Payguard.idempotent``).

    ``key`` is None when the route allows requests without a key (``required=False``):
    ``run`` then simply runs the effects in a transaction.
    """

    def __init__(self, guard: IdempotencyGuard, render_error: RenderError, *,
                 principal: str, key: str | None, method: str, path: str, body: bytes,
                 error: PayguardError | None = None) -> None:
        self.guard = guard
        self.render_error = render_error
        self.principal = principal
        self.key = key
        self.method = method
        self.path = path
        self.body = body
        self._error = error

    async def run(self, effects: Effects, *, status_code: int = 200) -> Response:
        """Run ``effects`` at most once for (principal, key) and answer with its response.

        A ``PayguardError`` raised by ``effects`` (``InsufficientBalance``, your own
        subclasses) rolls its writes back; a 4xx is rendered by the error hook and stored
        for replay, a 5xx gives the key back. Any other exception gives the key back and
        propagates (the retry runs the request again).
        """
        if self._error is not None:
            return to_response(self.render_error(self._error))
        if self.key is None:
            return to_response(await self._unguarded(effects, status_code))

        async def guarded(uow: UnitOfWork, _claim: Claim) -> StoredResponse:
            return _stored(await effects(uow), status_code)

        try:
            outcome = await self.guard.execute(
                principal=self.principal, key=self.key, method=self.method, path=self.path,
                body=self.body, effects=guarded)
        except PayguardError as exc:  # 409 in flight, 422 reused, 5xx: never stored
            return to_response(self.render_error(exc))
        return to_response(outcome.response, replayed=outcome.replayed)

    async def _unguarded(self, effects: Effects, status_code: int) -> StoredResponse:
        async def tx(uow: UnitOfWork) -> StoredResponse:
            return _stored(await effects(uow), status_code)

        try:
            return await self.guard.db.transaction(tx)
        except PayguardError as exc:
            return self.render_error(exc)
