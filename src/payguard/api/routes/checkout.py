"""Card checkout, cancel, webhooks and the local mailbox."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from starlette.responses import Response

from payguard.api.deps import Ctx, User, json_response, run_idempotent_phased
from payguard.api.problems import dumps
from payguard.api.schemas import CheckoutIn
from payguard.idempotency import Claim, StoredResponse
from payguard.outbox import list_mailbox
from payguard.service import cancel, checkout, phonepe_callbacks, webhooks

router = APIRouter(prefix="/api", tags=["checkout"])


@router.post("/checkout/sessions", status_code=201)
async def create_checkout_session(body: CheckoutIn, request: Request, ctx: Ctx,
                                  user: User) -> Response:
    target = checkout.CheckoutTarget(
        program_id=body.program_id, class_rep=body.class_rep, product_id=body.product_id,
        quantity=body.quantity or 1, topup_amount=body.topup_amount,
    )

    async def handler(claim: Claim | None) -> StoredResponse:
        status, payload = await checkout.start_checkout(ctx, user, target, claim)
        request.state.purchase_id = payload["purchase_id"]
        request.state.session_id = payload["session_id"]
        return json_response(payload, status)

    return await run_idempotent_phased(request, ctx, user, handler, required=True,
                                       operation=checkout.CHECKOUT_OPERATION)


@router.post("/purchases/{purchase_id}/cancel")
async def cancel_purchase(purchase_id: str, request: Request, ctx: Ctx, user: User) -> Response:
    request.state.purchase_id = purchase_id

    async def handler(claim: Claim | None) -> StoredResponse:
        return json_response(await cancel.cancel_purchase(ctx, user, purchase_id, claim))

    return await run_idempotent_phased(request, ctx, user, handler, required=False)


@router.post("/webhooks/stripe")
async def stripe_webhook(request: Request, ctx: Ctx) -> Response:
    payload = await request.body()
    result = await webhooks.handle_webhook(ctx, payload, request.headers.get("stripe-signature"))
    return Response(dumps(result), media_type="application/json")


@router.post("/webhooks/phonepe")
async def phonepe_callback(request: Request, ctx: Ctx) -> Response:
    """PhonePe's server-to-server callback (``Authorization: sha256(username:password)``)."""
    payload = await request.body()
    result = await phonepe_callbacks.handle_phonepe_callback(
        ctx, payload, request.headers.get("authorization"))
    return Response(dumps(result), media_type="application/json")


@router.get("/mailbox")
async def mailbox(ctx: Ctx, user: User,
                  limit: Annotated[int, Query(ge=1, le=500)] = 50) -> list[dict[str, Any]]:
    """Emails delivered to the local mailbox (when no SMTP server is configured)."""
    async with ctx.db.read() as uow:
        return await list_mailbox(uow.conn, user_id=user.user_id, limit=limit)
