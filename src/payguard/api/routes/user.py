"""User endpoints (user token). Another user's resource is 404, never 403."""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from starlette.responses import Response

from payguard.api.deps import Ctx, User, run_batched
from payguard.api.schemas import PurchaseIn, PurchaseStatusField
from payguard.service import catalog, purchases, wallets
from payguard.service.wallet_batch import WalletPurchase

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
    assert user.user_id is not None
    request.state.product_id = body.product_id
    response = await run_batched(request, ctx, user, WalletPurchase(
        user_id=user.user_id, product_id=body.product_id, quantity=body.quantity))
    if response.status_code == 201:
        request.state.purchase_id = json.loads(bytes(response.body))["id"]
    return response


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
