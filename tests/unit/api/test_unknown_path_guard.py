"""UnknownPathGuard: a path no route matches gets the router's own 404, byte for byte;
everything the router would answer differently (405, slash redirects, mounts) passes."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import httpx
from fastapi import FastAPI

from payguard.api.app import create_app
from payguard.api.fastpaths import UnknownPathGuard
from payguard.config import Settings
from payguard.service.auth import Authenticator, TokenCache
from payguard.service.principal import Principal


async def _no_database(_digest: str) -> Principal | None:
    raise AssertionError("an anonymous request must not reach the users table")


def app_for(tmp_path: Path, *, guard: bool) -> FastAPI:
    app = create_app(Settings(data_dir=tmp_path, admin_token="adm", log_requests=False))
    # No lifespan, so no real context: every caller here is anonymous (no token sent, so
    # authentication refuses before it would touch the database).
    app.state.ctx = SimpleNamespace(
        auth=Authenticator(_no_database, "adm", TokenCache(ttl=0, max_entries=0)))
    if not guard:
        app.user_middleware = [m for m in app.user_middleware if m.cls is not UnknownPathGuard]
    return app


async def answers(app: FastAPI, method: str, path: str) -> tuple[int, bytes, dict[str, str]]:
    transport = httpx.ASGITransport(app=app)  # no lifespan: only paths needing no context
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        r = await client.request(method, path, follow_redirects=False)
    headers = {k: v for k, v in r.headers.items() if k != "x-request-id"}
    return r.status_code, r.content, headers


async def test_guard_answers_exactly_what_the_router_would(tmp_path: Path) -> None:
    guarded, plain = app_for(tmp_path, guard=True), app_for(tmp_path, guard=False)
    cases = [("GET", "/api/no-such-thing"), ("GET", "/nope"), ("POST", "/api/v2/x"),
             ("GET", "/api/purchases/p1/nope"), ("DELETE", "/api/me"), ("GET", "/api/me/"),
             ("PUT", "/api/admin/users"), ("GET", "/sim/nope"), ("GET", "/static/../x")]
    for method, path in cases:
        assert await answers(guarded, method, path) == await answers(plain, method, path), path
    status, body, headers = await answers(guarded, "GET", "/api/no-such-thing")
    assert status == 404 and headers["content-type"] == "application/problem+json"
    assert b'"code":"NOT_FOUND"' in body
    assert (await answers(guarded, "DELETE", "/api/me"))[0] == 401  # auth comes first
    assert (await answers(guarded, "GET", "/nope/"))[0] == 404


async def test_guard_short_circuits_only_paths_no_route_matches(tmp_path: Path) -> None:
    app = app_for(tmp_path, guard=False)
    reached: list[str] = []
    sent: list[dict[str, object]] = []

    async def inner(scope: dict[str, object], receive: object, send: object) -> None:
        reached.append(str(scope["path"]))

    async def send(message: dict[str, object]) -> None:
        sent.append(message)

    async def receive() -> dict[str, object]:
        return {"type": "http.request", "body": b""}

    guard = UnknownPathGuard(inner)  # type: ignore[arg-type]
    for path in ("/api/me", "/api/purchases/p_1", "/sim/v1/checkout/sessions", "/healthz",
                 "/static/app.js", "/api/me/", "/api/nope", "/zzz"):
        scope = {"type": "http", "method": "GET", "path": path, "app": app, "headers": [],
                 "query_string": b""}
        await guard(scope, receive, send)  # type: ignore[arg-type]
    assert reached == ["/api/me", "/api/purchases/p_1", "/sim/v1/checkout/sessions",
                       "/healthz", "/static/app.js", "/api/me/"]
    starts = [m for m in sent if m["type"] == "http.response.start"]
    assert [m["status"] for m in starts] == [404, 404]
