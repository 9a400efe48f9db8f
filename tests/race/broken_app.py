"""A deliberately broken payment app: the naive code payguard exists to replace.

It offers the subset of the API the ``receipts`` and ``wallet`` scenarios use, and gets the
two classic races wrong on purpose:
- receipt numbers as ``count() + 1`` (two payments that count at once share a number);
- the wallet as read-modify-write (two debits that read at once both pass the balance
  check, and the later write overwrites the earlier: money is lost).
An ``await asyncio.sleep`` between read and write makes the race certain instead of likely.
Its own audit always says ok, so the harness must find the damage from the responses and
end-state reads, not by trusting the server.
"""

from __future__ import annotations

import asyncio
import secrets
import uuid
from typing import Any

from fastapi import FastAPI, Header, Request
from fastapi.responses import JSONResponse

__all__ = ["create_app"]

RACE_WINDOW = 0.01  # seconds between the read and the write


def _problem(status: int, code: str, detail: str) -> JSONResponse:
    return JSONResponse(
        {"status": status, "code": code, "title": code, "detail": detail},
        status_code=status, media_type="application/problem+json",
    )


def create_app(admin_token: str, *, openapi: bool = True) -> FastAPI:
    # Without an OpenAPI document the harness must find missing routes from their 404/405.
    app = FastAPI(title="broken payments", openapi_url="/openapi.json" if openapi else None)
    tokens: dict[str, str] = {}  # token -> user id
    balances: dict[str, int] = {}
    products: dict[str, dict[str, Any]] = {}
    receipts: list[str] = []

    def user_of(authorization: str | None) -> str | None:
        token = (authorization or "").removeprefix("Bearer ")
        return tokens.get(token)

    def is_admin(authorization: str | None) -> bool:
        return authorization == f"Bearer {admin_token}"

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok", "database": "ok", "redis": "absent"}

    @app.post("/api/admin/users", status_code=201)
    async def create_user(request: Request,
                          authorization: str | None = Header(None)) -> Any:
        if not is_admin(authorization):
            return _problem(401, "UNAUTHENTICATED", "admin token required")
        body = await request.json()
        uid, token = uuid.uuid4().hex, secrets.token_hex(8)
        tokens[token] = uid
        balances[uid] = 0
        return {"id": uid, "email": body["email"], "name": body.get("name"), "token": token}

    @app.post("/api/admin/products", status_code=201)
    async def create_product(request: Request,
                             authorization: str | None = Header(None)) -> Any:
        if not is_admin(authorization):
            return _problem(401, "UNAUTHENTICATED", "admin token required")
        body = await request.json()
        pid = uuid.uuid4().hex
        products[pid] = {"id": pid, "sku": body["sku"], "name": body["name"],
                         "price": body["price"], "currency": "USD",
                         "stock": len(body.get("items") or [])}
        return products[pid]

    @app.post("/api/admin/wallets/{user_id}/adjustments", status_code=201)
    async def adjust(user_id: str, request: Request,
                     authorization: str | None = Header(None)) -> Any:
        if not is_admin(authorization):
            return _problem(401, "UNAUTHENTICATED", "admin token required")
        body = await request.json()
        balances[user_id] += int(body["amount"])
        return {"balance": balances[user_id], "entry": {"amount": body["amount"]}}

    @app.post("/api/purchases", status_code=201)
    async def purchase(request: Request, authorization: str | None = Header(None),
                       idempotency_key: str | None = Header(None)) -> Any:
        uid = user_of(authorization)
        if uid is None:
            return _problem(401, "UNAUTHENTICATED", "unknown token")
        if not idempotency_key:
            return _problem(400, "IDEMPOTENCY_KEY_MISSING", "Idempotency-Key required")
        body = await request.json()
        product = products.get(body["product_id"])
        if product is None:
            return _problem(404, "NOT_FOUND", "no such product")
        price = int(product["price"])
        balance = balances[uid]  # read ...
        if balance < price:
            return _problem(400, "INSUFFICIENT_BALANCE", "not enough money")
        seq = len(receipts) + 1  # ... count ...
        await asyncio.sleep(RACE_WINDOW)
        balances[uid] = balance - price  # ... and write what was read: lost updates
        number = f"SC2026{seq:06d}"
        receipts.append(number)
        return {"id": uuid.uuid4().hex, "status": "completed", "kind": "product",
                "amount": price, "currency": "USD", "quantity": 1, "items": [],
                "receipt_number": number}

    @app.get("/api/wallet")
    async def wallet(authorization: str | None = Header(None)) -> Any:
        uid = user_of(authorization)
        if uid is None:
            return _problem(401, "UNAUTHENTICATED", "unknown token")
        return {"currency": "USD", "balance": balances[uid]}

    @app.get("/api/admin/audit")
    async def audit() -> dict[str, Any]:
        # Claims health without looking: the harness must not take this on trust.
        return {"ok": True, "wallets_checked": len(balances), "problems": []}

    return app
