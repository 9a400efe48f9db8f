"""Admin endpoints (admin token)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import Response

from payguard.api.deps import (
    Admin,
    Ctx,
    check_amount,
    json_response,
    run_batched,
    run_idempotent,
    run_idempotent_phased,
    secret_response,
)
from payguard.api.schemas import AdjustmentIn, ItemsIn, ProductIn, ProgramIn, RefundIn, UserIn
from payguard.idempotency import Claim, StoredResponse
from payguard.sequences import list_sequences
from payguard.service import catalog, refunds, users
from payguard.service.audit import run_audit
from payguard.service.numbers import format_next
from payguard.service.wallet_batch import WalletAdjustment
from payguard.store.uow import UnitOfWork

router = APIRouter(prefix="/api/admin", tags=["admin"])


@router.post("/users", status_code=201)
async def create_user(body: UserIn, request: Request, ctx: Ctx, admin: Admin) -> Response:
    async def effects(uow: UnitOfWork, _claim: Claim | None) -> StoredResponse:
        user = await users.create_user(uow.conn, email=body.email, name=body.name,
                                       currency=ctx.settings.currency)
        return secret_response(user, 201)

    return await run_idempotent(request, ctx, admin, effects, required=False)


@router.post("/users/{user_id}/token", status_code=201)
async def rotate_user_token(user_id: str, request: Request, ctx: Ctx, admin: Admin) -> Response:
    """A new token for a leaked one, shown once (``secret_response``: what is stored for a
    replay has the token null). This process refuses the old token from the commit on; the
    others once their cached copy is ``PAYGUARD_TOKEN_CACHE_TTL`` old."""
    async def effects(uow: UnitOfWork, _claim: Claim | None) -> StoredResponse:
        token = await users.rotate_token(uow.conn, user_id)
        uow.after_commit(lambda: ctx.auth.forget_user(user_id))
        return secret_response({"id": user_id, "token": token}, 201)

    return await run_idempotent(request, ctx, admin, effects, required=True)


@router.post("/products", status_code=201)
async def create_product(body: ProductIn, request: Request, ctx: Ctx, admin: Admin) -> Response:
    check_amount(ctx, body.price, "price")

    async def effects(uow: UnitOfWork, _claim: Claim | None) -> StoredResponse:
        product = await catalog.create_product(
            uow.conn, sku=body.sku, name=body.name, price=body.price,
            currency=(body.currency or ctx.settings.currency).upper(), items=body.items,
        )
        return json_response(product, 201)

    return await run_idempotent(request, ctx, admin, effects, required=False)


@router.post("/products/{product_id}/items")
async def add_items(product_id: str, body: ItemsIn, request: Request, ctx: Ctx,
                    admin: Admin) -> Response:
    async def effects(uow: UnitOfWork, _claim: Claim | None) -> StoredResponse:
        return json_response(await catalog.add_items(uow.conn, product_id, body.items))

    return await run_idempotent(request, ctx, admin, effects, required=False)


@router.post("/programs", status_code=201)
async def create_program(body: ProgramIn, request: Request, ctx: Ctx, admin: Admin) -> Response:
    for name in ("full_price", "class_rep_discount", "early_bird_discount"):
        check_amount(ctx, getattr(body, name), name)

    async def effects(uow: UnitOfWork, _claim: Claim | None) -> StoredResponse:
        program = await catalog.create_program(
            uow.conn, title=body.title, full_price=body.full_price,
            currency=(body.currency or ctx.settings.currency).upper(),
            class_rep_limit=body.class_rep_limit, class_rep_discount=body.class_rep_discount,
            early_bird_discount=body.early_bird_discount,
            early_bird_deadline=body.early_bird_deadline,
        )
        return json_response(program, 201)

    return await run_idempotent(request, ctx, admin, effects, required=False)


@router.post("/wallets/{user_id}/adjustments", status_code=201)
async def adjust_wallet(user_id: str, body: AdjustmentIn, request: Request, ctx: Ctx,
                        admin: Admin) -> Response:
    check_amount(ctx, body.amount, "amount")
    check_amount(ctx, body.set_balance, "set_balance")

    return await run_batched(request, ctx, admin, WalletAdjustment(
        user_id=user_id, currency=(body.currency or ctx.settings.currency).upper(),
        amount=body.amount, set_balance=body.set_balance, reason=body.reason,
    ))


@router.post("/purchases/{purchase_id}/refund")
async def refund_purchase(purchase_id: str, body: RefundIn, request: Request, ctx: Ctx,
                          admin: Admin) -> Response:
    request.state.purchase_id = purchase_id
    async with ctx.db.read() as uow:
        by_card = await refunds.refunds_by_card(uow.conn, purchase_id)
    if by_card:
        # Booked in one transaction, then sent to the provider (never inside it).
        async def phased(_claim: Claim | None) -> StoredResponse:
            refunded = await refunds.refund_card_purchase(ctx, purchase_id, body.reason)
            return json_response(refunded)

        return await run_idempotent_phased(request, ctx, admin, phased, required=True)

    async def effects(uow: UnitOfWork, _claim: Claim | None) -> StoredResponse:
        refunded = await refunds.refund_wallet_purchase(uow.conn, purchase_id, body.reason)
        return json_response(refunded)

    return await run_idempotent(request, ctx, admin, effects, required=True)


@router.get("/sequences")
async def sequences(ctx: Ctx, _admin: Admin) -> list[dict[str, Any]]:
    async with ctx.db.read() as uow:
        rows = await list_sequences(uow.conn)
    for row in rows:
        row["next_number"] = format_next(ctx.settings, str(row["series"]), str(row["period"]),
                                         int(row["last_value"]))  # type: ignore[call-overload]
    return rows


@router.get("/audit")
async def audit(ctx: Ctx, _admin: Admin) -> dict[str, Any]:
    async with ctx.db.read() as uow:
        return await run_audit(uow.conn)
