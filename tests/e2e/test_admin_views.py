"""The operator's admin views over HTTP, on SQLite and PostgreSQL: search and paging of
purchases across users, a purchase's full detail, users and journals, the webhook inbox
with exact delivery counts under duplicated concurrent deliveries, the outbox and the
retry of a dead email through an idempotency key, seats and stock."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from payguard.config import to_async_url
from payguard.store.engine import create_engine
from tests.support.api import ApiClient, checkout, create_program, pay, wait_for_status
from tests.support.server import LiveServer

DUPLICATES = 3


@pytest.fixture
def server(db_url: str, tmp_path: Path) -> Iterator[LiveServer]:
    live = LiveServer(tmp_path / "data", db_url, env={
        "PAYGUARD_SIM_DUPLICATE_DELIVERIES": str(DUPLICATES),
        "PAYGUARD_RECONCILE_INTERVAL": "0",
    }).start()
    try:
        yield live
    finally:
        live.stop()


@pytest.fixture
async def admin(server: LiveServer) -> AsyncIterator[ApiClient]:
    async with ApiClient(server.url, server.admin_token) as client:
        yield client


async def get(api: ApiClient, path: str, token: str | None = None, *,
              expect: int = 200, **params: Any) -> Any:
    r = await api.http.get(path, params=params, headers=api.auth(token or api.admin_token))
    assert r.status_code == expect, r.text
    return r.json()


async def all_pages(api: ApiClient, path: str, key: str, **params: Any) -> list[Any]:
    rows: list[Any] = []
    cursor = None
    while True:
        page = await get(api, path, **params, **({"cursor": cursor} if cursor else {}))
        rows.extend(page[key])
        cursor = page["next_cursor"]
        if cursor is None:
            return rows


async def test_admin_views(admin: ApiClient, server: LiveServer) -> None:
    api = admin
    # Two users buying from the wallet, one paying a program by card.
    alice = await api.create_user("alice@t.test", balance=10_000)
    bob = await api.create_user("bob@t.test", balance=5_000)
    product = await api.create_product(700, 12, sku="BOOK")
    wallet_bought: list[dict[str, Any]] = []
    for user, n in ((alice, 7), (bob, 4)):
        for _ in range(n):
            r = await api.purchase(user["token"], product["id"])
            assert r.status_code == 201, r.text
            wallet_bought.append(r.json())
    program = await create_program(api, limit=3)
    carol = await api.create_user("carol@t.test")
    started = await checkout(api, carol["token"], {"program_id": program["id"],
                                                   "class_rep": True})
    assert started.status_code == 201, started.text
    session = started.json()
    await pay(api, session["session_id"])
    card = await wait_for_status(api, carol["token"], session["purchase_id"], "completed")

    # Newest first across users, paged by cursor: every purchase exactly once, in order.
    everything = await all_pages(api, "/api/admin/purchases", "purchases", limit=3)
    assert [p["id"] for p in everything] == (
        [card["id"]] + [p["id"] for p in reversed(wallet_bought)])
    assert len({p["id"] for p in everything}) == 12
    assert {p["user_email"] for p in everything} == {"alice@t.test", "bob@t.test",
                                                     "carol@t.test"}

    # Filters.
    bobs = await all_pages(api, "/api/admin/purchases", "purchases", user_id=bob["id"])
    assert len(bobs) == 4 and {p["user_id"] for p in bobs} == {bob["id"]}
    programs = await get(api, "/api/admin/purchases", kind="program")
    assert [p["id"] for p in programs["purchases"]] == [card["id"]]
    assert (await get(api, "/api/admin/purchases", status="refunded"))["purchases"] == []
    assert len((await get(api, "/api/admin/purchases", status="completed",
                          limit=200))["purchases"]) == 12
    future = await get(api, "/api/admin/purchases", since="2999-01-01T00:00:00Z")
    assert future == {"purchases": [], "next_cursor": None}
    past = await get(api, "/api/admin/purchases", until="2000-01-01T00:00:00Z")
    assert past["purchases"] == []

    # Search by order number, receipt number, provider session id: exactly that purchase.
    target = wallet_bought[5]
    for q in (target["order_number"], target["receipt_number"]):
        found = await get(api, "/api/admin/purchases", q=q)
        assert [p["id"] for p in found["purchases"]] == [target["id"]]
    found = await get(api, "/api/admin/purchases", q=session["session_id"])
    assert [p["id"] for p in found["purchases"]] == [card["id"]]
    assert (await get(api, "/api/admin/purchases", q="SC1999000001"))["purchases"] == []

    # Refund the searched purchase through the idempotent endpoint, then read its detail.
    key = str(uuid.uuid4())
    refunded = await api.admin_post(f"/api/admin/purchases/{target['id']}/refund",
                                    {"reason": "charged twice"}, key=key, expect=200)
    assert refunded["status"] == "refunded"
    detail = await get(api, f"/api/admin/purchases/{target['id']}/detail")
    assert detail["purchase"]["status"] == "refunded"
    assert detail["receipt"]["number"] == target["receipt_number"]
    assert [i["value"] for i in detail["items"]] == target["items"]
    kinds = sorted((e["kind"], e["account_kind"], e["amount"]) for e in detail["ledger"])
    assert kinds == sorted([("purchase", "wallet", -700), ("purchase", "revenue", 700),
                            ("refund", "wallet", 700), ("refund", "revenue", -700)])
    assert sum(e["amount"] for e in detail["ledger"]) == 0
    refund_reason = {e["reason"] for e in detail["ledger"] if e["kind"] == "refund"}
    assert refund_reason == {"charged twice"}
    paths = {(k["principal"], k["path"], k["status_code"]) for k in detail["idempotency_keys"]}
    assert ("admin", f"/api/admin/purchases/{target['id']}/refund", 200) in paths
    assert any(k["path"] == "/api/purchases" and k["principal"].startswith("user:")
               for k in detail["idempotency_keys"])
    assert (await get(api, "/api/admin/purchases", status="refunded"))["purchases"][0][
        "id"] == target["id"]

    # The card purchase: provider session, each webhook event once with every delivery
    # counted (the simulator delivers each event DUPLICATES times, concurrently).
    deadline = asyncio.get_running_loop().time() + 20
    while True:
        card_detail = await get(api, f"/api/admin/purchases/{card['id']}/detail")
        events = card_detail["webhook_events"]
        if events and all(e["deliveries"] == DUPLICATES for e in events):
            break
        assert asyncio.get_running_loop().time() < deadline, events
        await asyncio.sleep(0.2)
    assert card_detail["provider_session"]["session_id"] == session["session_id"]
    assert card_detail["provider_session"]["payment_intent"]
    assert [e["type"] for e in events] == ["checkout.session.completed"]
    assert events[0]["category"] == "applied" and events[0]["duplicate"] is True
    assert {e["account_kind"] for e in card_detail["ledger"]} >= {"card", "revenue"}
    assert any(k["path"] == "/api/checkout/sessions" for k in card_detail["idempotency_keys"])
    deadline = asyncio.get_running_loop().time() + 20
    while not any(m["state"] == "sent" for m in card_detail["emails"]):
        assert asyncio.get_running_loop().time() < deadline, card_detail["emails"]
        await asyncio.sleep(0.2)
        card_detail = await get(api, f"/api/admin/purchases/{card['id']}/detail")
    assert card_detail["emails"][0]["recipient"] == "carol@t.test"

    inbox = await get(api, "/api/admin/webhooks")
    assert inbox["counts"]["duplicate"] == inbox["counts"]["events"] >= 1
    assert inbox["counts"]["deliveries"] == DUPLICATES * inbox["counts"]["events"]
    assert (await get(api, "/api/admin/webhooks", state="duplicate"))["events"][0][
        "event_id"] == events[0]["event_id"]
    assert (await get(api, "/api/admin/webhooks", state="failed"))["events"] == []

    # Users with balances, a user's journal paged newest first.
    users = await all_pages(api, "/api/admin/users", "users", limit=2)
    balances = {u["email"]: (u["balance"], u["purchases"]) for u in users}
    assert balances == {"alice@t.test": (10_000 - 6 * 700, 7),  # one of 7 refunded
                        "bob@t.test": (5_000 - 4 * 700, 4), "carol@t.test": (0, 1)}
    found_users = await get(api, "/api/admin/users", q="ALICE")
    assert [u["id"] for u in found_users["users"]] == [alice["id"]]
    journal = await all_pages(api, f"/api/admin/users/{alice['id']}/journal", "entries",
                              limit=3)
    assert len(journal) == 1 + 7 + 1  # funding, 7 purchases, 1 refund (target is alice's)
    assert [int(e["id"]) for e in journal] == sorted((int(e["id"]) for e in journal),
                                                     reverse=True)
    assert journal[0]["balance_after"] == 10_000 - 6 * 700

    # Seats and stock.
    [prog] = await get(api, "/api/admin/programs")
    assert (prog["class_rep_taken"], prog["seats_sold"], prog["seats_held"],
            prog["seats_left"]) == (1, 1, 0, 2)
    [prod] = await get(api, "/api/admin/products")
    assert (prod["stock"], prod["items_available"], prod["items_assigned"],
            prod["items_total"]) == (1, 1, 11, 12)

    # The outbox, and the retry of a dead email: once, through a key, replayed after.
    outbox = await get(api, "/api/admin/outbox")
    message = outbox["messages"][0]
    await _execute(server.database_url,
                   "UPDATE outbox_messages SET state = 'dead', attempts = 10, "
                   "last_error = 'smtp said no' WHERE id = :id", id=int(message["id"]))
    dead = await get(api, "/api/admin/outbox", state="dead")
    assert [m["id"] for m in dead["messages"]] == [message["id"]]
    assert dead["counts"]["dead"] == 1
    key = str(uuid.uuid4())
    path = f"/api/admin/outbox/{message['id']}/retry"
    first = await api.http.post(path, headers=api.auth(api.admin_token, key))
    again = await api.http.post(path, headers=api.auth(api.admin_token, key))
    assert first.status_code == again.status_code == 200, first.text
    assert again.headers.get("idempotent-replayed") == "true"
    assert again.content == first.content
    assert first.json()["attempts"] == 0
    other = await api.http.post(path, headers=api.auth(api.admin_token, str(uuid.uuid4())))
    assert other.status_code == 409 and other.json()["code"] == "INVALID_STATE"
    deadline = asyncio.get_running_loop().time() + 20
    while (await get(api, "/api/admin/outbox", state="dead"))["messages"]:
        assert asyncio.get_running_loop().time() < deadline
        await asyncio.sleep(0.2)
    assert (await get(api, "/api/admin/audit"))["ok"] is True

    # Bad input and the wrong token change nothing and say why.
    for params in ({"cursor": "abc"}, {"cursor": "12.x y"}, {"limit": 0}, {"limit": 201},
                   {"status": "paid"}, {"kind": "x"}, {"since": "yesterday"},
                   {"since": "2030-01-01T00:00:00"},  # naive: refused
                   {"since": "2030-01-02T00:00:00Z", "until": "2030-01-01T00:00:00Z"},
                   {"q": "x" * 256}, {"user_id": "../etc"}):
        body = await get(api, "/api/admin/purchases", expect=422, **params)
        assert body["code"] == "VALIDATION_ERROR", params
    assert (await get(api, "/api/admin/outbox", expect=422, cursor="1.x"))["code"] == (
        "VALIDATION_ERROR")
    assert (await get(api, "/api/admin/purchases/pur_nope/detail", expect=404))["code"] == (
        "NOT_FOUND")
    for path in ("/api/admin/purchases", "/api/admin/users", "/api/admin/webhooks",
                 "/api/admin/outbox", "/api/admin/programs", "/api/admin/products",
                 f"/api/admin/users/{alice['id']}/journal"):
        assert (await get(api, path, alice["token"], expect=403))["code"] == "FORBIDDEN"
    r = await api.http.post("/api/admin/outbox/999999/retry",
                            headers=api.auth(api.admin_token, str(uuid.uuid4())))
    assert r.status_code == 404 and r.json()["code"] == "NOT_FOUND"

    # Who am I: both roles, without a 403 for either.
    assert await get(api, "/api/session") == {"role": "admin", "id": None, "email": None,
                                              "name": None}
    me = await get(api, "/api/session", alice["token"])
    assert me["role"] == "user" and me["id"] == alice["id"]
    assert (await get(api, "/api/session", "nope", expect=401))["code"] == "UNAUTHENTICATED"


async def _execute(url: str, sql: str, **params: Any) -> None:
    """Poke the test database directly (what a failing SMTP server would leave behind)."""
    db = create_engine(to_async_url(url))
    try:
        async with db.begin() as conn:
            await conn.execute(sa.text(sql), params)
    finally:
        await db.dispose()
