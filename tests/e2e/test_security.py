"""Security findings, each attacked through real HTTP against a live server: the fixed
behaviour, and that nothing changed (audit clean, balances, stock and series as before)."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.api import ApiClient, checkout
from tests.support.rawhttp import post_large, raw_request
from tests.support.server import LiveServer
from tests.support.state import snapshot

PRICE = 500
SIM_KEY = "sk_test_payguard_simulated"  # the simulator's built-in development key


@pytest.fixture
def server(module_server: LiveServer) -> LiveServer:
    return module_server


@pytest.fixture
async def api(server: LiveServer) -> AsyncIterator[ApiClient]:
    async with ApiClient(server.url, server.admin_token) as client:
        yield client


@pytest.fixture
async def world(api: ApiClient) -> dict[str, Any]:
    user = await api.create_user(balance=10 * PRICE)
    product = await api.create_product(PRICE, 3)
    return {"user": user, "token": user["token"], "product": product}


def assert_problem(r: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/problem+json", r.headers
    body: dict[str, Any] = r.json()
    assert body["status"] == status and body["code"] == code, body
    assert body["title"] and body["detail"]
    return body


def assert_stripe_error(r: httpx.Response, status: int) -> dict[str, Any]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json")
    error: dict[str, Any] = r.json()["error"]
    assert error["type"] and error["message"]
    return error


# ---- 1. body limits -----------------------------------------------------------------------

async def test_body_limit_before_parsing_and_authentication(
        api: ApiClient, server: LiveServer, world: dict[str, Any]) -> None:
    before = await snapshot(api, world["token"], world["product"]["id"])
    # Webhooks: a small limit, before the signature is even looked at.
    r = await api.http.post("/api/webhooks/stripe", content=b"{" + b" " * 70_000 + b"}",
                            headers={"stripe-signature": "t=1,v1=00"})
    body = assert_problem(r, 413, "PAYLOAD_TOO_LARGE")
    assert "65536" in body["detail"]
    reply = await post_large(server.port, "/api/webhooks/stripe", 300_000, chunked=True)
    assert reply.status == 413 and reply.headers["content-type"] == "application/problem+json"
    assert json.loads(reply.body)["code"] == "PAYLOAD_TOO_LARGE"
    # The rest: 1 MiB by default, and a declared length over it is refused before
    # authentication (no token at all here).
    reply = await post_large(server.port, "/api/purchases", 2_000_000, chunked=False)
    assert reply.status == 413 and json.loads(reply.body)["code"] == "PAYLOAD_TOO_LARGE"
    # A chunked body has no declared length: counted as it streams in, refused past 1 MiB.
    reply = await post_large(server.port, "/api/purchases", 3_000_000, chunked=True, headers={
        "Authorization": f"Bearer {world['token']}", "Idempotency-Key": str(uuid.uuid4())})
    assert reply.status == 413 and json.loads(reply.body)["code"] == "PAYLOAD_TOO_LARGE"
    # 200 KB is under the general limit but over the webhook one: parsed, and refused as
    # malformed (a 200,000-digit number), never a 5xx.
    r = await api.http.post("/api/purchases", content=b"7" * 200_000, headers={
        **api.auth(world["token"], str(uuid.uuid4())), "content-type": "application/json"})
    assert_problem(r, 422, "VALIDATION_ERROR")
    assert await snapshot(api, world["token"], world["product"]["id"]) == before


def _peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):  # peak resident set size over the process's life
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM in /proc status")


def test_memory_stays_bounded_under_ten_100mb_bodies(tmp_path: Path) -> None:
    """Memory is a correctness bound here: a server of its own, so the peak is this test's.
    The bound is a property of the HTTP layer, the same on either database."""
    live = LiveServer(tmp_path / "data", f"sqlite:///{tmp_path / 'payguard.db'}").start()
    try:
        asyncio.run(_ten_huge_bodies(live))
    finally:
        live.stop()


async def _ten_huge_bodies(server: LiveServer) -> None:
    assert server.proc is not None
    async with ApiClient(server.url, server.admin_token) as api:
        user = await api.create_user(balance=PRICE)
        product = await api.create_product(PRICE, 1)
        before = await snapshot(api, user["token"], product["id"])
        size = 100 * 1024 * 1024
        replies = await asyncio.gather(*(
            post_large(server.port, "/api/webhooks/stripe" if i % 2 else "/api/purchases",
                       size, chunked=i % 4 < 2, headers={
                           "Authorization": f"Bearer {user['token']}",
                           "Idempotency-Key": str(uuid.uuid4())})
            for i in range(10)))
        assert [r.status for r in replies] == [413] * 10
        assert all(json.loads(r.body)["code"] == "PAYLOAD_TOO_LARGE" for r in replies)
        peak = _peak_rss_mb(server.proc.pid)
        assert peak < 300, f"server peaked at {peak:.0f} MB"
        assert await snapshot(api, user["token"], product["id"]) == before


# ---- 7. parse errors, authentication first, headers, titles ----------------------------

async def test_unparseable_bodies_are_422_and_authentication_comes_first(
        api: ApiClient, world: dict[str, Any]) -> None:
    before = await snapshot(api, world["token"], world["product"]["id"])
    json_type = {"content-type": "application/json"}
    # No token: 401 before the body is looked at, however broken it is.
    for raw in (b"{bad", b"\xff\xfe", b"[" * 100_000):
        r = await api.http.post("/api/purchases", content=raw, headers=json_type)
        assert_problem(r, 401, "UNAUTHENTICATED")
        r = await api.http.post("/api/admin/products", content=raw, headers=json_type)
        assert_problem(r, 401, "UNAUTHENTICATED")
    # With a token: every unparseable body is the contract's 422, never 400 or 5xx.
    for raw in (b"{bad", b'{"product_id": "\xff"}', b"[" * 100_000, b"{" * 50_000,
                b'{"product_id": "x", "quantity": ' + b"9" * 4_400 + b"}"):
        r = await api.http.post("/api/purchases", content=raw, headers={
            **api.auth(world["token"], str(uuid.uuid4())), **json_type})
        body = assert_problem(r, 422, "VALIDATION_ERROR")
        assert body["errors"], body
    assert await snapshot(api, world["token"], world["product"]["id"]) == before


async def test_blank_and_repeated_idempotency_keys_are_invalid(
        api: ApiClient, server: LiveServer, world: dict[str, Any]) -> None:
    before = await snapshot(api, world["token"], world["product"]["id"])
    body = {"product_id": world["product"]["id"]}
    token = {"Authorization": f"Bearer {world['token']}"}
    for blank in (" ", "   ", "\t", ""):
        reply = await raw_request(server.port, "POST", "/api/purchases", [
            ("Authorization", f"Bearer {world['token']}"), ("Idempotency-Key", blank),
            ("Content-Type", "application/json")], json.dumps(body).encode())
        assert reply.status == 400, (blank, reply)
        assert json.loads(reply.body)["code"] == "IDEMPOTENCY_KEY_INVALID", blank
    r = await api.http.post("/api/purchases", json=body, headers=[
        ("Authorization", f"Bearer {world['token']}"),
        ("Idempotency-Key", str(uuid.uuid4())), ("Idempotency-Key", str(uuid.uuid4()))])
    assert_problem(r, 400, "IDEMPOTENCY_KEY_INVALID")
    r = await api.http.post("/api/purchases", json=body, headers=token)
    assert_problem(r, 400, "IDEMPOTENCY_KEY_MISSING")
    assert await snapshot(api, world["token"], world["product"]["id"]) == before


async def test_405_carries_allow_and_titles_name_the_real_problem(
        api: ApiClient, world: dict[str, Any]) -> None:
    r = await api.http.delete("/api/purchases", headers=api.auth(world["token"]))
    assert_problem(r, 405, "METHOD_NOT_ALLOWED")
    assert {m.strip() for m in r.headers["allow"].split(",")} >= {"GET", "POST"}
    r = await api.http.put("/api/admin/users", headers=api.auth(api.admin_token))
    assert_problem(r, 405, "METHOD_NOT_ALLOWED")
    assert "POST" in r.headers["allow"]
    # The admin token on a user endpoint is not "Admin token required".
    body = assert_problem(await api.http.get("/api/wallet", headers=api.auth(api.admin_token)),
                          403, "FORBIDDEN")
    assert body["title"] == "Forbidden" and "user token" in body["detail"]
    body = assert_problem(await api.http.get("/api/admin/audit",
                                             headers=api.auth(world["token"])),
                          403, "FORBIDDEN")
    assert "admin token" in body["detail"]
    assert_problem(await api.http.get("/api/nothing-here"), 404, "NOT_FOUND")


# ---- 2. the simulator's pages and API ---------------------------------------------------

STRICT_HEADERS = {"x-content-type-options": "nosniff", "x-frame-options": "DENY"}


def assert_strict_page(r: httpx.Response) -> str:
    for name, value in STRICT_HEADERS.items():
        assert r.headers[name] == value, (name, r.headers)
    csp = r.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "frame-ancestors 'none'" in csp
    assert "script-src" not in csp and "unsafe-inline" not in csp
    return csp


async def test_simulator_page_escapes_and_locks_down(
        api: ApiClient, server: LiveServer, world: dict[str, Any]) -> None:
    for attack in ("<img src=x onerror=alert(document.domain)>", "\"><svg onload=alert(1)>"):
        r = await api.http.get(f"/sim/checkout/{attack}")
        assert r.status_code == 404 and r.headers["content-type"].startswith("text/html")
        assert "<img" not in r.text and "<svg" not in r.text and "&lt;" in r.text
        assert_strict_page(r)
    r = await api.http.get("/sim/checkout/cs_x", params={"declined": "<b>x</b>"})
    assert_stripe_error(r, 400)
    # A real session: its page is strict, and paying redirects to its own success URL only.
    topup = await checkout(api, world["token"], {"topup_amount": 700})
    assert topup.status_code == 201, topup.text
    session_id = topup.json()["session_id"]
    r = await api.http.get(f"/sim/checkout/{session_id}")
    assert r.status_code == 200
    csp = assert_strict_page(r)
    assert f"form-action 'self' {server.url}" in csp
    r = await api.http.post(f"/sim/checkout/{session_id}/pay",
                            data={"outcome": "succeeded"})
    assert r.status_code == 303
    assert r.headers["location"].startswith(f"{server.url}/?purchase=")


async def test_simulator_refuses_unsafe_return_urls_and_bad_bodies(
        api: ApiClient, world: dict[str, Any]) -> None:
    before = await snapshot(api, world["token"], world["product"]["id"])
    sim_auth = {"Authorization": f"Bearer {SIM_KEY}"}
    base = {"mode": "payment", "line_items[0][quantity]": "1",
            "line_items[0][price_data][currency]": "usd",
            "line_items[0][price_data][unit_amount]": "100",
            "line_items[0][price_data][product_data][name]": "x",
            "success_url": "https://shop.example/ok"}
    for field, url in (("success_url", "javascript:alert(1)"),
                       ("success_url", "data:text/html,<script>alert(1)</script>"),
                       ("success_url", "//evil.example/"), ("success_url", "https://"),
                       ("success_url", "https://a.example/\r\nSet-Cookie: x=1"),
                       ("cancel_url", "javascript:alert(1)"),
                       ("cancel_url", "https://a b.example/")):
        r = await api.http.post("/sim/v1/checkout/sessions", data={**base, field: url},
                                headers=sim_auth)
        assert assert_stripe_error(r, 400)["param"] == field, url
    r = await api.http.post("/sim/v1/checkout/sessions",
                            data={**base, "a" + "[x]" * 2000: "1"}, headers=sim_auth)
    assert_stripe_error(r, 400)
    ok = await api.http.post("/sim/v1/checkout/sessions", data=base, headers=sim_auth)
    assert ok.status_code == 200, ok.text
    sid = ok.json()["id"]
    # Pay bodies that are not objects, nest deeply, or are not text: Stripe-shaped 400s.
    for raw, ctype in ((b"[1]", "application/json"), (b'"x"', "application/json"),
                       (b"[" * 100_000, "application/json"), (b"\xff", "application/json"),
                       (b"outcome=\xff", "application/x-www-form-urlencoded"),
                       (b'{"outcome": "succeeded", "name": {"a": 1}}', "application/json"),
                       (b'{"outcome": "succeeded", "card_last4": "\xd9\xa1234"}',
                        "application/json"),
                       (b'{"outcome": "nope"}', "application/json")):
        r = await api.http.post(f"/sim/checkout/{sid}/pay", content=raw,
                                headers={"content-type": ctype})
        assert_stripe_error(r, 400)
    r = await api.http.get(f"/sim/v1/checkout/sessions/{sid}", headers=sim_auth)
    assert r.json()["status"] == "open" and r.json()["payment_status"] == "unpaid"
    # Unknown paths and methods answer in Stripe's shape too.
    assert_stripe_error(await api.http.get("/sim/v1/nothing", headers=sim_auth), 404)
    r = await api.http.delete(f"/sim/checkout/{sid}/pay")
    assert_stripe_error(r, 405)
    assert r.headers["allow"] == "POST"
    assert await snapshot(api, world["token"], world["product"]["id"]) == before


async def test_simulator_debug_endpoints_need_the_admin_token(
        api: ApiClient, world: dict[str, Any]) -> None:
    assert_stripe_error(await api.http.get("/sim/deliveries"), 401)
    assert_stripe_error(await api.http.get("/sim/deliveries",
                                           headers=api.auth(world["token"])), 401)
    r = await api.http.get("/sim/deliveries", headers=api.auth(api.admin_token))
    assert r.status_code == 200 and r.json()["object"] == "list"


# ---- 3. no secret at rest; private files ----------------------------------------------

async def test_user_token_is_not_stored_and_replay_says_it_was_shown(
        api: ApiClient, server: LiveServer) -> None:
    key = str(uuid.uuid4())
    email = f"{uuid.uuid4().hex[:10]}@t.test"
    first = await api.http.post("/api/admin/users", json={"email": email},
                                headers=api.auth(api.admin_token, key))
    assert first.status_code == 201, first.text
    token = first.json()["token"]
    assert token and first.json()["token_already_shown"] is False
    replay = await api.http.post("/api/admin/users", json={"email": email},
                                 headers=api.auth(api.admin_token, key))
    assert replay.status_code == 201 and replay.headers["idempotent-replayed"] == "true"
    assert replay.json() == {**first.json(), "token": None, "token_already_shown": True}
    assert token not in replay.text
    # The token works, and nothing under the data dir or in the database holds it.
    me = await api.http.get("/api/me", headers=api.auth(token))
    assert me.status_code == 200 and me.json()["email"] == email
    for path in server.data_dir.rglob("*"):
        if path.is_file():
            assert token.encode() not in path.read_bytes(), path
    if server.database_url.startswith("postgresql"):
        import asyncpg

        conn = await asyncpg.connect(server.database_url)
        try:
            stored = await conn.fetch("SELECT response_body FROM idempotency_keys")
        finally:
            await conn.close()
        assert stored and not any(token.encode() in bytes(r[0] or b"") for r in stored)


def test_data_dir_and_files_are_private_from_creation(tmp_path: Path) -> None:
    data = tmp_path / "fresh" / "data"
    live = LiveServer(tmp_path, f"sqlite:///{data / 'payguard.db'}",
                      env={"PAYGUARD_DATA_DIR": str(data), "PAYGUARD_ADMIN_TOKEN": "",
                           "PAYGUARD_API_DOCS": "false"})
    live.start()
    try:
        token = (data / "admin_token").read_text().strip()
        live.admin_token = token

        async def use() -> None:
            async with ApiClient(live.url, token) as api:
                user = await api.create_user(balance=PRICE)
                topup = await checkout(api, user["token"], {"topup_amount": 100})
                assert topup.status_code == 201, topup.text
                # API docs switched off: no page, no assets; the contract stays served.
                assert (await api.http.get("/api/docs")).status_code == 404
                assert (await api.http.get("/api/docs/assets/init.js")).status_code == 404
                assert (await api.http.get("/api/openapi.json")).status_code == 200

        asyncio.run(use())
        assert data.stat().st_mode & 0o777 == 0o700
        names = {p.name for p in data.iterdir()}
        assert {"admin_token", "payguard.db", "simulator.db"} <= names, names
        for path in data.iterdir():
            mode = path.stat().st_mode & 0o777
            assert mode & 0o077 == 0, f"{path.name} is {oct(mode)}"
    finally:
        live.stop()


# ---- 4. production mode ----------------------------------------------------------------

@pytest.mark.parametrize("missing", ["PAYGUARD_STRIPE_API_KEY", "PAYGUARD_STRIPE_WEBHOOK_SECRET"])
def test_production_mode_refuses_the_public_development_secrets(
        tmp_path: Path, missing: str) -> None:
    import subprocess
    import sys

    live = LiveServer(tmp_path / "data", f"sqlite:///{tmp_path / 'payguard.db'}")
    env = {**live.environment(), "PAYGUARD_PROVIDER": "stripe",
           "PAYGUARD_STRIPE_API_KEY": "sk_test_operator_set",
           "PAYGUARD_STRIPE_WEBHOOK_SECRET": "whsec_operator_set"}
    del env[missing]
    done = subprocess.run([sys.executable, "-m", "payguard", "serve", "--port",
                           str(live.port)], env=env, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "refusing to start" in done.stdout and missing in done.stdout


# ---- 4/5. webhooks: shapes validated after the signature, bounded labels -----------------

def signed(payload: bytes, secret: str = "whsec_payguard_simulated") -> dict[str, str]:
    from payguard.providers.simulator.webhooks import sign_payload

    return {"stripe-signature": sign_payload(payload, secret),
            "content-type": "application/json"}


async def test_signed_malformed_events_are_422_and_unknown_types_one_label(
        api: ApiClient, world: dict[str, Any]) -> None:
    before = await snapshot(api, world["token"], world["product"]["id"])
    session = {"object": "checkout.session", "id": "cs_x"}
    for event in ({"id": "evt_1", "type": "checkout.session.completed", "data": "x"},
                  {"type": "checkout.session.completed", "data": {"object": session}},
                  {"id": ["evt"], "type": "checkout.session.completed",
                   "data": {"object": session}},
                  {"id": "evt_2", "type": "checkout.session.completed",
                   "data": {"object": {"object": "checkout.session", "id": ["cs_1"]}}},
                  {"id": "evt_3", "type": "checkout.session.completed",
                   "data": {"object": {**session, "metadata": "x"}}},
                  {"id": "evt_4", "type": "x" * 60_000, "data": {"object": session}},
                  {"id": "evt_5", "type": 5, "data": {"object": session}},
                  [1, 2], "event"):
        payload = json.dumps(event).encode()
        r = await api.http.post("/api/webhooks/stripe", content=payload,
                                headers=signed(payload))
        assert_problem(r, 422, "VALIDATION_ERROR")
    for payload in (b"{bad", b"[" * 30_000):
        r = await api.http.post("/api/webhooks/stripe", content=payload,
                                headers=signed(payload))
        assert_problem(r, 422, "VALIDATION_ERROR")
    # A forged signature is still 400, whatever the shape.
    r = await api.http.post("/api/webhooks/stripe", content=b"[]",
                            headers=signed(b"[]", "whsec_wrong"))
    assert_problem(r, 400, "INVALID_SIGNATURE")
    # Made-up types: accepted (200, recorded) and counted under one label.
    for i in range(3):
        payload = json.dumps({"id": f"evt_odd_{uuid.uuid4().hex}", "type": f"odd.{i}." * 15,
                              "data": {"object": {"object": "charge"}}}).encode()
        r = await api.http.post("/api/webhooks/stripe", content=payload,
                                headers=signed(payload))
        assert r.status_code == 200 and r.json() == {"received": True, "duplicate": False}
    metrics = (await api.http.get("/metrics")).text
    assert "odd.0" not in metrics and 'type="other"' in metrics
    assert await snapshot(api, world["token"], world["product"]["id"]) == before


# ---- 10. API docs from pinned local assets ----------------------------------------------

async def test_api_docs_load_nothing_from_elsewhere(api: ApiClient) -> None:
    page = await api.http.get("/api/docs")
    assert page.status_code == 200
    csp = page.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
    assert "//" not in page.text  # no absolute or protocol-relative URL: all local
    for asset in ("swagger-ui-bundle.js", "swagger-ui.css", "init.js"):
        r = await api.http.get(f"/api/docs/assets/{asset}")
        assert r.status_code == 200 and len(r.content) > 100, asset
        assert r.headers["x-content-type-options"] == "nosniff"
    for name in ("../../config.py", "index.html", "swagger-ui-bundle.js.map", "%2e%2e%2fx"):
        assert (await api.http.get(f"/api/docs/assets/{name}")).status_code == 404, name


# ---- 6. per-user limits -----------------------------------------------------------------

LIMITS = {"PAYGUARD_MAX_PENDING_CHECKOUTS": "3", "PAYGUARD_MAX_HELD_ITEMS": "2",
          "PAYGUARD_MAX_PENDING_TOPUPS": "1", "PAYGUARD_MAX_KEYS_PER_HOUR": "8"}


@pytest.fixture
async def limited(db_url: str, tmp_path: Path) -> AsyncIterator[ApiClient]:
    live = LiveServer(tmp_path / "data", db_url, env=LIMITS).start()
    try:
        async with ApiClient(live.url, live.admin_token) as client:
            yield client
    finally:
        live.stop()


def assert_limit(r: httpx.Response) -> None:
    assert_problem(r, 429, "LIMIT_REACHED")
    assert int(r.headers["retry-after"]) >= 1


async def test_per_user_limits_on_what_checkouts_hold(limited: ApiClient) -> None:
    api = limited
    user = await api.create_user()
    token = user["token"]
    one, two = await api.create_product(PRICE, 5), await api.create_product(PRICE, 5)
    program = await api.admin_post("/api/admin/programs", {
        "title": "p", "full_price": 1000, "class_rep_limit": 5})
    program2 = await api.admin_post("/api/admin/programs", {
        "title": "q", "full_price": 1000, "class_rep_limit": 5})
    assert (await checkout(api, token, {"product_id": one["id"], "quantity": 2})).status_code \
        == 201
    async def refused(body: dict[str, Any]) -> None:
        before = await snapshot(api, token, two["id"])
        assert_limit(await checkout(api, token, body))
        assert await snapshot(api, token, two["id"]) == before  # nothing reserved or numbered

    await refused({"product_id": two["id"], "quantity": 1})
    assert (await checkout(api, token, {"topup_amount": 100})).status_code == 201
    await refused({"topup_amount": 200})
    third = await checkout(api, token, {"program_id": program["id"]})
    assert third.status_code == 201
    await refused({"program_id": program2["id"]})
    # Freeing one makes room again.
    r = await api.http.post(f"/api/purchases/{third.json()['purchase_id']}/cancel",
                            headers=api.auth(token))
    assert r.status_code == 200 and r.json()["status"] == "canceled"
    assert (await checkout(api, token, {"program_id": program2["id"]})).status_code == 201


async def test_concurrent_checkouts_cannot_pass_a_limit_together(limited: ApiClient) -> None:
    api = limited
    user = await api.create_user()
    replies = await asyncio.gather(*(checkout(api, user["token"], {"topup_amount": 100 + i})
                                     for i in range(6)))
    assert sorted(r.status_code for r in replies) == [201] + [429] * 5
    mine = (await api.http.get("/api/purchases", headers=api.auth(user["token"]))).json()
    assert len(mine) == 1
    assert (await api.audit())["ok"]


async def test_stored_idempotency_keys_per_user_per_hour(limited: ApiClient) -> None:
    api = limited
    user = await api.create_user()  # no money: each purchase is a stored 400
    product = await api.create_product(PRICE, 1)
    keys = [str(uuid.uuid4()) for _ in range(8)]
    for key in keys:
        r = await api.purchase(user["token"], product["id"], key=key)
        assert_problem(r, 400, "INSUFFICIENT_BALANCE")
    before = await snapshot(api, user["token"], product["id"])
    assert_limit(await api.purchase(user["token"], product["id"], key=str(uuid.uuid4())))
    # Retries of stored keys are not new keys: still answered.
    r = await api.purchase(user["token"], product["id"], key=keys[0])
    assert r.status_code == 400 and r.headers["idempotent-replayed"] == "true"
    assert await snapshot(api, user["token"], product["id"]) == before
    # The admin is not limited.
    for _ in range(10):
        await api.admin_post("/api/admin/users", {"email": f"{uuid.uuid4().hex}@t.test"},
                             key=str(uuid.uuid4()))


# ---- 7. datetimes with offsets: the early-bird deadline on both databases ------------------

async def test_early_bird_deadline_with_an_offset_prices_at_the_right_instant(
        api: ApiClient, world: dict[str, Any]) -> None:
    from datetime import UTC, datetime, timedelta, timezone

    now = datetime.now(UTC).replace(microsecond=0)
    east, west = timezone(timedelta(hours=5)), timezone(timedelta(hours=-5))
    cases = [  # (deadline as the client writes it, early-bird applies)
        ((now - timedelta(hours=1)).astimezone(east), False),  # wall time 4 h ahead of UTC
        ((now + timedelta(hours=1)).astimezone(west), True),   # wall time 4 h behind UTC
    ]
    for deadline, early in cases:
        program = await api.admin_post("/api/admin/programs", {
            "title": "eb", "full_price": 10_000, "class_rep_limit": 1,
            "early_bird_discount": 1_500, "early_bird_deadline": deadline.isoformat()})
        instant = deadline.astimezone(UTC).isoformat().replace("+00:00", "Z")
        assert program["early_bird_deadline"] == instant
        r = await checkout(api, world["token"], {"program_id": program["id"]})
        assert r.status_code == 201, r.text
        assert r.json()["amount"] == (8_500 if early else 10_000), (deadline, r.json())
    before = await snapshot(api, world["token"], world["product"]["id"])
    for bad in (0, 1_900_000_000, "2030-01-01T00:00:00", "tomorrow", True):
        r = await api.http.post("/api/admin/programs", json={
            "title": "eb", "full_price": 100, "class_rep_limit": 1,
            "early_bird_deadline": bad}, headers=api.auth(api.admin_token))
        assert_problem(r, 422, "VALIDATION_ERROR")
    for bad_query in ("older_than=1e16", "older_than=inf", "older_than=1e400",
                      "older_than=nan", "older_than=-1"):
        assert_problem(await api.http.get(f"/api/admin/purchases/stuck?{bad_query}",
                                          headers=api.auth(api.admin_token)),
                       422, "VALIDATION_ERROR")
        assert_problem(await api.http.post(f"/api/admin/reconcile?{bad_query}",
                                           headers=api.auth(api.admin_token)),
                       422, "VALIDATION_ERROR")
    for cursor in ("١٢", "99999999999999999999", "1 ", "-1", "0x1"):
        assert_problem(await api.http.get("/api/wallet/entries", params={"cursor": cursor},
                                          headers=api.auth(world["token"])),
                       422, "VALIDATION_ERROR")
    for limit in (2**63, 10**6 + 1, -1):
        r = await api.http.post("/api/admin/programs", json={
            "title": "x", "full_price": 100, "class_rep_limit": limit},
            headers=api.auth(api.admin_token))
        assert_problem(r, 422, "VALIDATION_ERROR")
    assert await snapshot(api, world["token"], world["product"]["id"]) == before
