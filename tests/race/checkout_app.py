"""A tiny in-memory checkout service, correct or naive, to prove the checkout scenarios.

payguard's own checkout and webhook endpoints may not exist yet; this app offers the subset
``class-rep``, ``checkout-idempotency``, ``double-click`` and ``webhook-storm`` use, so the
harness can be shown to pass a correct implementation and to fail a naive one:
- correct: idempotency keys (in progress: 409, done: byte-identical replay), one pending
  checkout per user and item under a lock, seats counted under the lock, webhook event ids
  applied once, fulfilment only from ``pending``;
- naive (``naive=True``): none of that, with a sleep inside every check-then-act.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import secrets
import uuid
from collections import defaultdict
from typing import Any

from fastapi import FastAPI, Header, Request, Response
from fastapi.responses import JSONResponse

__all__ = ["create_checkout_app"]

# Wide enough that concurrent requests always overlap inside it, even on an idle machine
# where the client staggers its sends by a few milliseconds.
WINDOW = 0.1


def _problem(status: int, code: str) -> JSONResponse:
    return JSONResponse({"status": status, "code": code, "title": code, "detail": code},
                        status_code=status, media_type="application/problem+json",
                        headers={"Retry-After": "1"} if status in (409, 503) else None)


def create_checkout_app(admin_token: str, webhook_secret: str, *, naive: bool) -> FastAPI:
    app = FastAPI(title="checkout " + ("naive" if naive else "correct"))
    tokens: dict[str, str] = {}
    balances: dict[str, int] = {}
    programs: dict[str, dict[str, Any]] = {}
    purchases: dict[str, dict[str, Any]] = {}
    sessions: dict[str, dict[str, Any]] = {}
    receipts: list[str] = []
    stored: dict[tuple[str, str], tuple[int, bytes] | None] = {}  # None: in progress
    events_seen: set[str] = set()
    locks: defaultdict[str, asyncio.Lock] = defaultdict(asyncio.Lock)

    def principal(auth: str | None) -> str | None:
        if auth == f"Bearer {admin_token}":
            return "admin"
        return tokens.get((auth or "").removeprefix("Bearer "))

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.post("/api/admin/users", status_code=201)
    async def create_user(request: Request) -> dict[str, Any]:
        body = await request.json()
        uid, token = f"usr_{uuid.uuid4().hex[:10]}", secrets.token_hex(8)
        tokens[token], balances[uid] = uid, 0
        return {"id": uid, "email": body["email"], "name": body.get("name"), "token": token}

    @app.post("/api/admin/programs", status_code=201)
    async def create_program(request: Request) -> dict[str, Any]:
        body = await request.json()
        pid = f"prg_{uuid.uuid4().hex[:10]}"
        programs[pid] = {**body, "id": pid, "class_rep_taken": 0}
        return programs[pid]

    @app.get("/api/programs/{program_id}")
    async def get_program(program_id: str) -> dict[str, Any]:
        return programs[program_id]

    @app.get("/api/wallet")
    async def wallet(authorization: str | None = Header(None)) -> dict[str, Any]:
        return {"currency": "USD", "balance": balances[principal(authorization) or ""]}

    @app.get("/api/purchases")
    async def list_purchases(status: str | None = None,
                             authorization: str | None = Header(None)) -> list[dict[str, Any]]:
        uid = principal(authorization)
        return [p for p in purchases.values()
                if p["user"] == uid and (status is None or p["status"] == status)]

    @app.get("/api/purchases/{purchase_id}")
    async def get_purchase(purchase_id: str) -> dict[str, Any]:
        return purchases[purchase_id]

    async def create_checkout(uid: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        item = body.get("program_id") or f"topup-{uuid.uuid4().hex}"
        class_rep = bool(body.get("class_rep"))
        async with locks[f"{uid}:{item}"] if not naive else contextlib.nullcontext():
            existing = [p for p in purchases.values() if p["user"] == uid
                        and p["item"] == item and p["status"] == "pending"]
            if naive:
                await asyncio.sleep(WINDOW)
            if existing:
                return 200, {**_session_body(existing[0]), "existing": True}
            async with locks[f"seats:{item}"] if not naive else contextlib.nullcontext():
                if class_rep:
                    program = programs[item]
                    taken = program["class_rep_taken"]
                    if taken >= program["class_rep_limit"]:
                        return 409, {}
                    if naive:
                        await asyncio.sleep(WINDOW)
                    program["class_rep_taken"] = taken + 1
                pid, sid = f"pur_{uuid.uuid4().hex[:10]}", f"cs_{uuid.uuid4().hex[:10]}"
                purchases[pid] = {
                    "id": pid, "user": uid, "item": item, "status": "pending",
                    "is_class_rep": class_rep, "kind": "program" if body.get("program_id")
                    else "topup", "amount": body.get("topup_amount") or 100,
                    "receipt_number": None, "provider_session_id": sid,
                }
                sessions[sid] = {"id": sid, "object": "checkout.session", "status": "open",
                                 "payment_status": "unpaid", "metadata": {"purchase_id": pid}}
                return 201, {**_session_body(purchases[pid]), "existing": False}

    def _session_body(p: dict[str, Any]) -> dict[str, Any]:
        return {"session_id": p["provider_session_id"], "url": "http://sim/",
                "purchase_id": p["id"], "order_number": p["id"], "amount": p["amount"],
                "currency": "USD"}

    @app.post("/api/checkout/sessions")
    async def checkout(request: Request, authorization: str | None = Header(None),
                       idempotency_key: str | None = Header(None)) -> Response:
        uid = principal(authorization) or ""
        body = await request.json()
        scope = (uid, idempotency_key or "")
        if not naive:
            if scope in stored:
                done = stored[scope]
                if done is None:
                    return _problem(409, "REQUEST_IN_PROGRESS")
                return Response(done[1], status_code=done[0], media_type="application/json",
                                headers={"Idempotent-Replayed": "true"})
            stored[scope] = None
        status, answer = await create_checkout(uid, body)
        if status == 409:
            stored.pop(scope, None)
            return _problem(409, "CLASS_REP_LIMIT_REACHED")
        raw = json.dumps(answer).encode()
        if not naive:
            stored[scope] = (status, raw)
        return Response(raw, status_code=status, media_type="application/json")

    @app.post("/api/purchases/{purchase_id}/cancel")
    async def cancel(purchase_id: str) -> Response:
        purchase = purchases[purchase_id]
        async with locks[purchase_id] if not naive else contextlib.nullcontext():
            if purchase["status"] != "pending":
                return _problem(409, "INVALID_STATE")
            if naive:
                await asyncio.sleep(WINDOW)
            purchase["status"] = "canceled"
            if purchase["is_class_rep"]:
                programs[purchase["item"]]["class_rep_taken"] -= 1
        return JSONResponse(purchase)

    async def fulfil(event: dict[str, Any]) -> bool:
        """Apply one event; False when its id was applied before."""
        if not naive and event["id"] in events_seen:
            return False
        events_seen.add(event["id"])
        pid = event["data"]["object"]["metadata"]["purchase_id"]
        purchase = purchases[pid]
        async with locks[pid] if not naive else contextlib.nullcontext():
            if not naive and purchase["status"] != "pending":
                return True
            if naive:
                await asyncio.sleep(WINDOW)
            purchase["status"] = "completed"
            if purchase["kind"] == "topup":
                balances[purchase["user"]] += purchase["amount"]
            purchase["receipt_number"] = f"SC2026{len(receipts) + 1:06d}"
            receipts.append(purchase["receipt_number"])
        return True

    @app.post("/api/webhooks/stripe")
    async def webhook(request: Request,
                      stripe_signature: str | None = Header(None)) -> Response:
        raw = await request.body()
        parts = dict(p.split("=", 1) for p in (stripe_signature or "").split(","))
        mac = hmac.new(webhook_secret.encode(), f"{parts.get('t')}.".encode() + raw,
                       hashlib.sha256).hexdigest()
        if not hmac.compare_digest(mac, parts.get("v1", "")):
            return _problem(400, "BAD_SIGNATURE")
        applied = await fulfil(json.loads(raw))
        return JSONResponse({"received": True, "duplicate": not applied})

    @app.get("/sim/v1/checkout/sessions/{sid}")
    async def sim_session(sid: str) -> dict[str, Any]:
        return sessions[sid]

    @app.post("/sim/checkout/{sid}/pay")
    async def sim_pay(sid: str) -> dict[str, Any]:
        sessions[sid].update(status="complete", payment_status="paid")
        evt = {"id": f"evt_{uuid.uuid4().hex}", "type": "checkout.session.completed",
               "data": {"object": sessions[sid]}}
        # The simulator's duplicate deliveries, all at once.
        await asyncio.gather(*(fulfil(evt) for _ in range(3)))
        return {"session": sessions[sid]}

    @app.get("/api/admin/audit")
    async def audit() -> dict[str, Any]:
        return {"ok": True, "wallets_checked": len(balances), "problems": []}

    return app
