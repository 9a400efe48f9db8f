"""User endpoints (user token). Another user's resource is 404, never 403."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from starlette.responses import Response

from payguard.api.deps import Ctx, User, json_response, run_idempotent
from payguard.api.schemas import PurchaseIn, PurchaseStatusField
from payguard.clock import utcnow
from payguard.idempotency import Claim, StoredResponse
from payguard.idempotency import store as idempotency_store
from payguard.service import catalog, purchases, wallets
from payguard.store.uow import UnitOfWork

router = APIRouter(prefix="/api", tags=["user"])

@router.get("/me")
async def me(user: User) -> dict[str, Any]:
    return {"id": user.user_id, "email": user.email, "name": user.name}


@router.get("/wallet")
async def wallet(ctx: Ctx, user: User) -> dict[str, Any]:
    assert user.user_id is not None
    return await wallets.read_wallet(ctx.db.hot, user.user_id, ctx.settings.currency)


@router.get("/wallet/entries")
async def wallet_entries(
    ctx: Ctx, user: User,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    # Exactly ASCII digits that fit a 64-bit id (str.isdigit would take Unicode digits).
    cursor: Annotated[str | None, Query(pattern=r"^[0-9]{1,18}$")] = None,
) -> dict[str, Any]:
    assert user.user_id is not None
    async with ctx.db.read() as uow:
        return await wallets.list_entries(uow.conn, user.user_id, ctx.settings.currency,
                                          limit=limit, cursor=int(cursor) if cursor else None)


@router.get("/products")
async def products(ctx: Ctx, _user: User) -> list[dict[str, Any]]:
    async with ctx.db.read() as uow:
        return await catalog.list_products(uow.conn)


@router.get("/products/{product_id}")
async def product(product_id: str, ctx: Ctx, _user: User) -> dict[str, Any]:
    async with ctx.db.read() as uow:
        return await catalog.get_product(uow.conn, product_id)


@router.get("/programs")
async def programs(ctx: Ctx, _user: User) -> list[dict[str, Any]]:
    async with ctx.db.read() as uow:
        return await catalog.list_programs(uow.conn)


@router.get("/programs/{program_id}")
async def program(program_id: str, ctx: Ctx, _user: User) -> dict[str, Any]:
    async with ctx.db.read() as uow:
        return await catalog.get_program(uow.conn, program_id)


@router.post("/purchases", status_code=201)
async def create_purchase(body: PurchaseIn, request: Request, ctx: Ctx, user: User) -> Response:
    request.state.product_id = body.product_id

    async def effects(uow: UnitOfWork, claim: Claim | None) -> StoredResponse:
        purchase = await purchases.purchase_with_wallet(
            uow.conn, ctx.settings, user, product_id=body.product_id, quantity=body.quantity
        )
        request.state.purchase_id = purchase["id"]
        if claim is not None:  # the key names its purchase (the admin purchase detail)
            await idempotency_store.advance(uow.conn, claim, "purchased", utcnow(),
                                            purchase_id=purchase["id"])
        return json_response(purchase, 201)

    return await run_idempotent(request, ctx, user, effects, required=True)


@router.get("/purchases")
async def list_purchases(ctx: Ctx, user: User, status: PurchaseStatusField | None = None,
                         limit: Annotated[int, Query(ge=1, le=500)] = 100
                         ) -> list[dict[str, Any]]:
    async with ctx.db.read() as uow:
        return await purchases.list_purchases(uow.conn, user, status=status, limit=limit)


@router.get("/purchases/{purchase_id}")
async def get_purchase(purchase_id: str, ctx: Ctx, user: User) -> dict[str, Any]:
    async with ctx.db.read() as uow:
        return await purchases.get_purchase(uow.conn, user, purchase_id)


@router.get("/receipts/{number}")
async def receipt(number: str, ctx: Ctx, user: User) -> dict[str, Any]:
    async with ctx.db.read() as uow:
        return await purchases.get_receipt(uow.conn, user, number)
