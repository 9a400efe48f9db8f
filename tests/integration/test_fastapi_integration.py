"""``payguard.fastapi`` in an application of its own, raced through ASGI on SQLite and
PostgreSQL: the idempotent dependency, the lock dependency, the error hook and the ASGI
middleware."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import Depends, FastAPI, Header, HTTPException
from sqlalchemy import func, select
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.types import Scope

import payguard
from payguard import Lease, UnitOfWork
from payguard.fastapi import IdempotencyMiddleware, IdempotentRequest, Payguard

PREFIX = "it_"


async def user_id(authorization: str = Header()) -> str:
    """The app's own (toy) auth: ``Authorization: User <id>``."""
    scheme, _, who = authorization.partition(" ")
    if scheme != "User" or not who:
        raise HTTPException(401, "who are you?")
    return who


def build_app(pg: Payguard) -> FastAPI:
    app = FastAPI()
    pg.install(app)
    ledger = payguard.Ledger(pg.tables)
    active: list[int] = []

    @app.post("/charges", status_code=201)
    async def charge(request: Request,
                     idem: IdempotentRequest = Depends(pg.idempotent(user_id))) -> object:
        amount = int((await request.json())["amount"])

        async def effects(uow: UnitOfWork) -> dict[str, object]:
            await asyncio.sleep(0.05)  # keep the claim in flight while duplicates arrive
            moved = await ledger.transfer(uow.conn, debit="wallet", credit="shop",
                                          amount=amount, currency="EUR", kind="charge")
            return {"transfer": moved.id, "balance": moved.debit_balance_after}

        return await idem.run(effects, status_code=201)

    @app.post("/accounts/{account}/touch")
    async def touch(account: str,
                    lease: Lease = Depends(pg.hold("account:{account}", wait=10))) -> object:
        active.append(1)
        concurrent = len(active)
        await asyncio.sleep(0.01)
        active.pop()
        return {"token": lease.fencing_token, "concurrent": concurrent}

    @app.post("/slow/{account}")
    async def slow(account: str,
                   lease: Lease = Depends(pg.hold("account:{account}", wait=0))) -> object:
        await asyncio.sleep(0.3)
        return {"token": lease.fencing_token}

    return app


@pytest.fixture
async def pg(db_url: str) -> AsyncIterator[Payguard]:
    guard = Payguard(db_url, prefix=PREFIX, create_tables=True)
    async with guard.lifespan():
        ledger = payguard.Ledger(guard.tables)

        async def setup(uow: UnitOfWork) -> None:
            await ledger.open_account(uow.conn, "funding", currency="EUR", kind="funding",
                                      allow_negative=True)
            await ledger.open_account(uow.conn, "wallet", currency="EUR")
            await ledger.open_account(uow.conn, "shop", currency="EUR", kind="revenue")
            await ledger.transfer(uow.conn, debit="funding", credit="wallet", amount=100,
                                  currency="EUR", kind="topup")

        await guard.db.transaction(setup)
        yield guard


def client(app: object) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app),  # type: ignore[arg-type]
                             base_url="http://shop.test")


async def _transfers(pg: Payguard) -> int:
    async with pg.db.read() as uow:
        return int(await uow.conn.scalar(
            select(func.count()).select_from(pg.tables.transfers)) or 0)


async def test_concurrent_duplicates_charge_once_and_replay(pg: Payguard) -> None:
    app = build_app(pg)
    headers = {"Authorization": "User u1", "Idempotency-Key": "charge-1"}
    async with client(app) as http:
        answers = await asyncio.gather(*(
            http.post("/charges", json={"amount": 7}, headers=headers) for _ in range(20)))
        statuses = sorted(r.status_code for r in answers)
        assert statuses.count(201) >= 1
        assert set(statuses) <= {201, 409}
        firsts = [r for r in answers if r.status_code == 201
                  and "idempotent-replayed" not in r.headers]
        assert len(firsts) == 1
        for r in answers:
            if r.status_code == 409:
                assert r.headers["content-type"] == "application/problem+json"
                assert r.json()["code"] == "REQUEST_IN_PROGRESS"
                assert r.headers["retry-after"] == "1"
        replay = await http.post("/charges", json={"amount": 7}, headers=headers)
        assert replay.status_code == 201 and replay.headers["idempotent-replayed"] == "true"
        assert replay.content == firsts[0].content
        # The same key, another body: 422; another user, the same key: a new charge.
        reused = await http.post("/charges", json={"amount": 8}, headers=headers)
        assert reused.status_code == 422 and reused.json()["code"] == "IDEMPOTENCY_KEY_REUSED"
        other = await http.post("/charges", json={"amount": 7},
                                headers={**headers, "Authorization": "User u2"})
        assert other.status_code == 201 and "idempotent-replayed" not in other.headers
    assert await _transfers(pg) == 1 + 2  # the top-up and two charges


async def test_bad_keys_and_business_errors_change_nothing(pg: Payguard) -> None:
    app = build_app(pg)
    async with client(app) as http:
        missing = await http.post("/charges", json={"amount": 1},
                                  headers={"Authorization": "User u1"})
        assert missing.status_code == 400
        assert missing.json()["code"] == "IDEMPOTENCY_KEY_MISSING"
        unauthenticated = await http.post("/charges", json={"amount": 1},
                                          headers={"Idempotency-Key": "k"})
        assert unauthenticated.status_code == 422  # FastAPI: the Authorization header
        too_much = {"Authorization": "User u1", "Idempotency-Key": "big"}
        refused = await http.post("/charges", json={"amount": 1000}, headers=too_much)
        assert refused.status_code == 400
        assert refused.json()["code"] == "INSUFFICIENT_BALANCE"
        again = await http.post("/charges", json={"amount": 1000}, headers=too_much)
        assert again.headers["idempotent-replayed"] == "true"
        assert again.content == refused.content
    assert await _transfers(pg) == 1


async def test_the_error_hook_renders_the_apps_own_format(db_url: str) -> None:
    def render(exc: payguard.PayguardError) -> payguard.StoredResponse:
        return payguard.json_response({"error": {"kind": exc.code.lower()}},
                                      payguard.http_status(exc))

    pg = Payguard(db_url, prefix=PREFIX, create_tables=True, render_error=render)
    async with pg.lifespan(), client(build_app(pg)) as http:
        answer = await http.post("/charges", json={"amount": 1},
                                 headers={"Authorization": "User u1"})
        assert answer.status_code == 400
        assert answer.headers["content-type"] == "application/json"
        assert answer.json() == {"error": {"kind": "idempotency_key_missing"}}


async def test_the_lock_dependency_serialises_a_key_with_growing_tokens(pg: Payguard) -> None:
    app = build_app(pg)
    async with client(app) as http:
        answers = await asyncio.gather(*(http.post("/accounts/a1/touch") for _ in range(12)))
        assert [r.status_code for r in answers] == [200] * 12
        assert {r.json()["concurrent"] for r in answers} == {1}
        tokens = sorted(r.json()["token"] for r in answers)
        assert len(set(tokens)) == 12
        slow = asyncio.create_task(http.post("/slow/a2"))
        await asyncio.sleep(0.1)
        busy = await http.post("/slow/a2")
        assert busy.status_code == 503 and busy.json()["code"] == "LOCK_TIMEOUT"
        assert busy.headers["content-type"] == "application/problem+json"
        assert (await slow).status_code == 200


async def test_middleware_makes_a_plain_starlette_route_idempotent(pg: Payguard) -> None:
    calls: list[bytes] = []

    async def create(request: Request) -> JSONResponse:
        body = await request.body()
        calls.append(body)
        await asyncio.sleep(0.05)
        if json.loads(body).get("fail"):
            return JSONResponse({"error": "boom"}, status_code=502)
        return JSONResponse({"n": len(calls)}, status_code=201)

    async def principal(scope: Scope) -> str | None:
        for name, value in scope["headers"]:
            if name == b"x-user":
                return str(value.decode())
        return None

    app = IdempotencyMiddleware(Starlette(routes=[Route("/things", create, methods=["POST"])]),
                                guard=pg.guard, principal=principal)
    async with client(app) as http:
        headers = {"x-user": "u1", "Idempotency-Key": "t1"}
        answers = await asyncio.gather(*(
            http.post("/things", content=b'{"a":1}', headers=headers) for _ in range(10)))
        assert len(calls) == 1
        assert {r.status_code for r in answers} <= {201, 409}
        replay = await http.post("/things", content=b'{"a": 1}', headers=headers)
        assert replay.status_code == 201 and replay.headers["idempotent-replayed"] == "true"
        assert replay.json() == {"n": 1}
        assert (await http.post("/things", content=b'{"a":2}', headers=headers)).status_code \
            == 422
        # A 5xx is sent but not stored: the retry runs again.
        failing = {"x-user": "u1", "Idempotency-Key": "t2"}
        for expected_calls in (2, 3):
            answer = await http.post("/things", content=b'{"fail":1}', headers=failing)
            assert answer.status_code == 502 and len(calls) == expected_calls
        # No key, or no principal: passed through unguarded.
        await http.post("/things", content=b'{"a":1}', headers={"x-user": "u1"})
        await http.post("/things", content=b'{"a":1}', headers={"Idempotency-Key": "t1"})
        assert len(calls) == 5


def test_the_integration_does_not_import_the_reference_service() -> None:
    code = ("import sys, payguard.fastapi; print(sorted(m for m in sys.modules if "
            "m.startswith(('payguard.api', 'payguard.service', 'payguard.cli'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "[]"
