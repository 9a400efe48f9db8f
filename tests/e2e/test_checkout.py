"""Checkout through the simulated provider (issue 5's must-shows), SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

from payguard.config import to_async_url
from payguard.service.lifecycle import close_pending_in
from payguard.store.engine import create_engine
from payguard.store.uow import Database
from tests.support.api import (
    ApiClient,
    checkout,
    create_program,
    outcome_counts,
    pay,
    wait_for_status,
)
from tests.support.server import LiveServer


async def _program(api: ApiClient, program_id: str, token: str) -> dict[str, object]:
    r = await api.http.get(f"/api/programs/{program_id}", headers=api.auth(token))
    return dict(r.json())


async def test_15_class_rep_checkouts_on_a_limit_of_10(api: ApiClient) -> None:
    program = await create_program(api, limit=10)
    users = await asyncio.gather(*(api.create_user() for _ in range(15)))
    body = {"program_id": program["id"], "class_rep": True}
    responses = await asyncio.gather(*(checkout(api, u["token"], body) for u in users))
    assert outcome_counts(responses) == {(201, None): 10, (409, "CLASS_REP_LIMIT_REACHED"): 5}
    winners = [(u, r.json()) for u, r in zip(users, responses, strict=True)
               if r.status_code == 201]
    losers = [u for u, r in zip(users, responses, strict=True) if r.status_code == 409]
    assert len({s["session_id"] for _, s in winners}) == 10
    assert (await _program(api, program["id"], users[0]["token"]))["class_rep_taken"] == 10

    # Two cancel (concurrently with a duplicate cancel each: one 200, one 409), two get in.
    for user, session in winners[:2]:
        cancels = await asyncio.gather(*(api.http.post(
            f"/api/purchases/{session['purchase_id']}/cancel",
            headers=api.auth(user["token"])) for _ in range(2)))
        assert sorted(r.status_code for r in cancels) == [200, 409]
    late = await asyncio.gather(*(checkout(api, u["token"], body) for u in losers[:3]))
    assert outcome_counts(late) == {(201, None): 2, (409, "CLASS_REP_LIMIT_REACHED"): 1}
    paying = winners[2:] + [(u, r.json()) for u, r in zip(losers[:3], late, strict=True)
                            if r.status_code == 201]
    await asyncio.gather(*(pay(api, s["session_id"]) for _, s in paying))
    done = await asyncio.gather(*(wait_for_status(api, u["token"], s["purchase_id"],
                                                  "completed") for u, s in paying))
    assert len(done) == 10 and all(p["is_class_rep"] for p in done)
    assert all(p["pricing"]["final_price"] == 8_000 for p in done)
    assert (await _program(api, program["id"], users[0]["token"]))["class_rep_taken"] == 10
    # Someone who already bought it cannot check out again.
    again = await checkout(api, paying[0][0]["token"], {"program_id": program["id"]})
    assert (again.status_code, again.json()["code"]) == (409, "ALREADY_PURCHASED")
    audit = await api.audit()
    assert audit["ok"], audit["problems"]


async def test_three_concurrent_checkouts_with_one_key_make_one_session(api: ApiClient) -> None:
    program = await create_program(api, limit=5)
    user = await api.create_user()
    key = str(uuid.uuid4())
    body = {"program_id": program["id"], "class_rep": True}
    responses = await asyncio.gather(*(checkout(api, user["token"], body, key=key)
                                       for _ in range(3)))
    created = [r for r in responses if r.status_code == 201]
    assert created
    assert len({r.content for r in created}) == 1
    for r in responses:
        assert r.status_code == 201 or r.json()["code"] == "REQUEST_IN_PROGRESS", r.text
    replay = await checkout(api, user["token"], body, key=key)
    assert replay.headers["idempotent-replayed"] == "true"
    assert replay.content == created[0].content
    listed = await api.http.get("/api/purchases", headers=api.auth(user["token"]))
    assert len(listed.json()) == 1
    assert (await _program(api, program["id"], user["token"]))["class_rep_taken"] == 1


async def test_double_click_with_different_keys_makes_one_session(api: ApiClient) -> None:
    product = await api.create_product(1_500, 5)
    user = await api.create_user()
    body = {"product_id": product["id"]}
    responses = await asyncio.gather(*(checkout(api, user["token"], body) for _ in range(5)))
    statuses = outcome_counts(responses)
    assert statuses[(201, None)] == 1
    assert set(statuses) <= {(201, None), (200, None), (409, "PAYMENT_IN_PROGRESS")}
    sessions = {r.json()["session_id"] for r in responses if r.status_code in (200, 201)}
    assert len(sessions) == 1
    existing = [r.json()["existing"] for r in responses if r.status_code == 200]
    assert all(existing)
    listed = await api.http.get("/api/purchases?status=pending", headers=api.auth(user["token"]))
    assert len(listed.json()) == 1
    r = await api.http.get(f"/api/products/{product['id']}", headers=api.auth(user["token"]))
    assert r.json()["stock"] == 4


async def test_product_and_topup_checkouts_complete(api: ApiClient) -> None:
    product = await api.create_product(1_500, 3)
    user = await api.create_user()
    prod = (await checkout(api, user["token"], {"product_id": product["id"], "quantity": 2}))
    top = (await checkout(api, user["token"], {"topup_amount": 2_500}))
    assert prod.status_code == top.status_code == 201
    await pay(api, prod.json()["session_id"])
    await pay(api, top.json()["session_id"])
    bought = await wait_for_status(api, user["token"], prod.json()["purchase_id"], "completed")
    assert len(bought["items"]) == 2 and bought["card"] == {"brand": "visa", "last4": "4242"}
    await wait_for_status(api, user["token"], top.json()["purchase_id"], "completed")
    assert await api.balance(user["token"]) == 2_500
    r = await api.http.get(f"/api/products/{product['id']}", headers=api.auth(user["token"]))
    assert r.json()["stock"] == 1
    audit = await api.audit()
    assert audit["ok"], audit["problems"]


async def test_decline_then_expire_releases_the_seat(api: ApiClient) -> None:
    program = await create_program(api, limit=1)
    user = await api.create_user()
    r = await checkout(api, user["token"], {"program_id": program["id"], "class_rep": True})
    session = r.json()
    await pay(api, session["session_id"], "failed")  # declined: session stays open
    await asyncio.sleep(0.3)
    assert (await _program(api, program["id"], user["token"]))["class_rep_taken"] == 1
    expired = await api.http.post(f"/sim/v1/checkout/sessions/{session['session_id']}/expire",
                                  headers={"Authorization": "Bearer sk_test_payguard_simulated"})
    assert expired.status_code == 200, expired.text
    await wait_for_status(api, user["token"], session["purchase_id"], "expired")
    assert (await _program(api, program["id"], user["token"]))["class_rep_taken"] == 0


async def test_refund_of_a_card_purchase_releases_the_seat_once(api: ApiClient) -> None:
    program = await create_program(api, limit=2)
    user = await api.create_user()
    r = await checkout(api, user["token"], {"program_id": program["id"], "class_rep": True})
    await pay(api, r.json()["session_id"])
    await wait_for_status(api, user["token"], r.json()["purchase_id"], "completed")
    refunds = await asyncio.gather(*(api.http.post(
        f"/api/admin/purchases/{r.json()['purchase_id']}/refund", json={"reason": "asked"},
        headers=api.auth(api.admin_token, str(uuid.uuid4()))) for _ in range(4)))
    assert outcome_counts(refunds) == {(200, None): 1, (409, "INVALID_STATE"): 3}
    ok = next(x for x in refunds if x.status_code == 200).json()
    assert ok["status"] == "refunded" and ok["refund_status"] == "done"
    assert (await _program(api, program["id"], user["token"]))["class_rep_taken"] == 0
    audit = await api.audit()
    assert audit["ok"], audit["problems"]


async def test_provider_down_gives_503_and_leaves_nothing_reserved(
    db_url: str, tmp_path: Path,
) -> None:
    server = LiveServer(tmp_path / "data", db_url,
                        env={"PAYGUARD_SIM_FAILURE_RATE": "1"}).start()
    try:
        async with ApiClient(server.url, server.admin_token) as api:
            program = await create_program(api, limit=3)
            product = await api.create_product(1_000, 2)
            user = await api.create_user()
            responses = await asyncio.gather(
                checkout(api, user["token"], {"program_id": program["id"], "class_rep": True}),
                checkout(api, user["token"], {"product_id": product["id"], "quantity": 2}),
            )
            for r in responses:
                assert (r.status_code, r.json()["code"]) == (503, "PROVIDER_UNAVAILABLE")
                assert int(r.headers["retry-after"]) >= 1
            assert (await _program(api, program["id"], user["token"]))["class_rep_taken"] == 0
            p = await api.http.get(f"/api/products/{product['id']}",
                                   headers=api.auth(user["token"]))
            assert p.json()["stock"] == 2
            audit = await api.audit()
            assert audit["ok"], audit["problems"]
    finally:
        server.stop()


async def test_webhooks_delivered_10_times_apply_once(db_url: str, tmp_path: Path) -> None:
    server = LiveServer(tmp_path / "data", db_url,
                        env={"PAYGUARD_SIM_DUPLICATE_DELIVERIES": "10"}).start()
    try:
        async with ApiClient(server.url, server.admin_token) as api:
            program = await create_program(api, limit=10)
            users = await asyncio.gather(*(api.create_user() for _ in range(4)))
            sessions = [(await checkout(api, u["token"], {"program_id": program["id"],
                                                          "class_rep": True})).json()
                        for u in users]
            outcomes = ["succeeded", "async_succeeded", "succeeded", "async_failed"]
            await asyncio.gather(*(pay(api, s["session_id"], o)
                                   for s, o in zip(sessions, outcomes, strict=True)))
            for u, s, o in zip(users, sessions, outcomes, strict=True):
                await wait_for_status(api, u["token"], s["purchase_id"],
                                      "failed" if o == "async_failed" else "completed")
            # Let every duplicate land, then check nothing was applied twice.
            await asyncio.sleep(1.5)
            receipts = []
            for u, s in zip(users, sessions, strict=True):
                p = (await api.http.get(f"/api/purchases/{s['purchase_id']}",
                                        headers=api.auth(u["token"]))).json()
                if p["receipt_number"]:
                    receipts.append(p["receipt_number"])
                mail = (await api.http.get("/api/mailbox", headers=api.auth(u["token"]))).json()
                assert len(mail) == (1 if p["status"] == "completed" else 0)
            assert len(receipts) == len(set(receipts)) == 3
            assert (await _program(api, program["id"], users[0]["token"]))[
                "class_rep_taken"] == 3
            audit = await api.audit()
            assert audit["ok"], audit["problems"]
    finally:
        server.stop()


async def test_late_payment_after_the_seat_went_to_someone_else_is_refunded(
    db_url: str, tmp_path: Path, api: ApiClient, live_server: LiveServer,
) -> None:
    program = await create_program(api, limit=1)
    alice, bob = await asyncio.gather(api.create_user(), api.create_user())
    first = (await checkout(api, alice["token"], {"program_id": program["id"],
                                                  "class_rep": True})).json()
    # Our side expires Alice's hold (as the reaper does at expiry) while her session is
    # still payable at the provider: the classic late-payment race.
    db = Database(create_engine(to_async_url(db_url)))
    try:
        closed = await db.transaction(lambda uow: close_pending_in(
            uow.conn, first["purchase_id"], "expired", reason="test"))
        assert closed is not None
    finally:
        await db.dispose()
    second = await checkout(api, bob["token"], {"program_id": program["id"], "class_rep": True})
    assert second.status_code == 201
    await pay(api, first["session_id"])
    late = await wait_for_status(api, alice["token"], first["purchase_id"], "refunded",
                                 refund_status="done")
    assert late["receipt_number"] is None
    assert (await _program(api, program["id"], bob["token"]))["class_rep_taken"] == 1
    audit = await api.audit()
    assert audit["ok"], audit["problems"]
