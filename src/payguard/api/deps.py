"""Request-scoped dependencies: the app context, the caller, idempotent execution."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated, Any

from fastapi import Depends, Request
from starlette.responses import Response

from payguard.api.authfirst import PRINCIPAL_STATE, bearer_token
from payguard.api.problems import dumps, to_response
from payguard.errors import Forbidden, ValidationFailed
from payguard.idempotency import Claim, StoredResponse, parse_key
from payguard.idempotency.responses import json_response
from payguard.service.context import AppContext
from payguard.service.principal import Principal
from payguard.service.wallet_batch import WalletCommand
from payguard.store.uow import UnitOfWork

__all__ = [
    "Admin",
    "Ctx",
    "User",
    "check_amount",
    "json_response",
    "run_batched",
    "run_idempotent",
    "run_idempotent_phased",
    "secret_response",
]


async def get_ctx(request: Request) -> AppContext:
    # async on purpose: FastAPI runs a plain ``def`` dependency in its thread pool, a
    # thread hand-off on every request for one attribute read.
    ctx: AppContext = request.app.state.ctx
    return ctx


async def get_principal(request: Request, ctx: Annotated[AppContext, Depends(get_ctx)]
                        ) -> Principal:
    # AuthFirstMiddleware has authenticated every /api/ request before its body was read.
    found = request.scope.get("state", {}).get(PRINCIPAL_STATE)
    if isinstance(found, Principal):
        return found
    principal = await ctx.auth.authenticate(bearer_token(request.headers.get("authorization")))
    request.state.principal = principal.scope
    return principal


async def require_admin(p: Annotated[Principal, Depends(get_principal)]) -> Principal:
    if not p.is_admin:
        raise Forbidden("this endpoint needs the admin token")
    return p


async def require_user(p: Annotated[Principal, Depends(get_principal)]) -> Principal:
    if p.is_admin:
        raise Forbidden("this endpoint is for user tokens, not the admin token")
    return p


Ctx = Annotated[AppContext, Depends(get_ctx)]
Admin = Annotated[Principal, Depends(require_admin)]
User = Annotated[Principal, Depends(require_user)]


def secret_response(payload: dict[str, Any], status: int, *,
                    secret: str = "token") -> StoredResponse:
    """A response carrying a secret: the caller sees it now; what is stored (and replayed)
    has ``secret`` set to null and says that it was already shown."""
    replay = {**payload, secret: None, f"{secret}_already_shown": True}
    return StoredResponse(status=status, body=dumps(replay),
                          headers={"content-type": "application/json"},
                          first_body=dumps({**payload, f"{secret}_already_shown": False}))


def check_amount(ctx: AppContext, value: int | None, field: str) -> None:
    if value is not None and abs(value) > ctx.settings.max_amount:
        raise ValidationFailed(
            f"{field} exceeds PAYGUARD_MAX_AMOUNT ({ctx.settings.max_amount})",
            errors=[{"loc": ["body", field], "msg": "above PAYGUARD_MAX_AMOUNT"}],
        )


async def run_idempotent(
    request: Request,
    ctx: AppContext,
    principal: Principal,
    effects: Callable[[UnitOfWork, Claim | None], Awaitable[StoredResponse]],
    *,
    required: bool,
) -> Response:
    """Run ``effects`` in one transaction, at most once per (principal, Idempotency-Key).

    Without a key (where one is optional) the effects simply run in one transaction.
    """
    key = parse_key(request.headers.getlist("idempotency-key"), required=required)
    if key is None:
        return to_response(await ctx.db.transaction(lambda uow: effects(uow, None)))
    request.state.idempotency_key = key
    outcome = await ctx.guard.execute(
        principal=principal.scope, key=key, method=request.method, path=request.url.path,
        body=await request.body(), effects=effects,
    )
    return to_response(outcome.response, replayed=outcome.replayed)


async def run_batched(request: Request, ctx: AppContext, principal: Principal,
                      command: WalletCommand) -> Response:
    """Hand a wallet command (key required) to the process's group-commit writer and
    answer with its own committed outcome (``service.batch_writer``)."""
    key = parse_key(request.headers.getlist("idempotency-key"), required=True)
    assert key is not None
    request.state.idempotency_key = key
    outcome = await ctx.writer.submit(
        principal=principal.scope, key=key, method=request.method, path=request.url.path,
        body=await request.body(), command=command,
    )
    return to_response(outcome.response, replayed=outcome.replayed)


async def run_idempotent_phased(
    request: Request,
    ctx: AppContext,
    principal: Principal,
    handler: Callable[[Claim | None], Awaitable[StoredResponse]],
    *,
    required: bool,
    operation: str | None = None,
) -> Response:
    """Like ``run_idempotent`` for operations that call the provider between their own
    short transactions: ``handler`` commits its phases and gets the claim to record
    recovery points on. ``operation``: the kind recorded on the claim (for the reconciler)."""
    key = parse_key(request.headers.getlist("idempotency-key"), required=required)
    if key is None:
        return to_response(await handler(None))
    request.state.idempotency_key = key
    outcome = await ctx.guard.execute_phased(
        principal=principal.scope, key=key, method=request.method, path=request.url.path,
        body=await request.body(), handler=handler, operation=operation,
    )
    return to_response(outcome.response, replayed=outcome.replayed)
