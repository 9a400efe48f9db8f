"""PhonePe (simulated) end to end, on SQLite and PostgreSQL: issue 17's must-shows.

Each test runs a real ``payguard serve`` whose PhonePe simulator is mounted at
``/sim/phonepe``; the service talks to it through the official SDK, the simulator calls
back ``/api/webhooks/phonepe`` with PhonePe's ``Authorization`` header, and the poller
checks pending orders on PhonePe's schedule (scaled down so the tests stay fast).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import subprocess
import sys
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support import services
from tests.support.api import ApiClient, checkout, create_program, outcome_counts, wait_for_status
from tests.support.phonepe import (
    PHONEPE_ENV,
    deliveries,
    pay_phonepe,
    retry_checkout,
    sim_stats,
    wait_delivered,
)
from tests.support.server import LiveServer

CONCURRENCY, QUEUE = 8, 4  # a small waiting room: the storm also meets 503s
TOPUP = 50_000  # paise


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def phonepe_server(request: pytest.FixtureRequest,
                   tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """One server per backend for this module (each test uses its own users and orders)."""
    data = tmp_path_factory.mktemp("phonepe")
    pg_url = services.create_pg_database() if request.param == "postgresql" else None
    env = {**PHONEPE_ENV, "PAYGUARD_PROVIDER_CONCURRENCY": str(CONCURRENCY),
           "PAYGUARD_PROVIDER_QUEUE": str(QUEUE), "PAYGUARD_SIM_LATENCY_MS": "10"}
    server = LiveServer(data / "data", pg_url or f"sqlite:///{data / 'payguard.db'}", env=env)
    try:
        yield server.start()
    finally:
        server.stop()
        if pg_url is not None:
            services.drop_pg_database(pg_url)


@pytest.fixture
async def pp(phonepe_server: LiveServer) -> AsyncIterator[ApiClient]:
    async with ApiClient(phonepe_server.url, phonepe_server.admin_token) as client:
        yield client


async def _purchase(api: ApiClient, token: str, purchase_id: str) -> dict[str, Any]:
    r = await api.http.get(f"/api/purchases/{purchase_id}", headers=api.auth(token))
    assert r.status_code == 200, r.text
    return dict(r.json())


async def _mailbox(api: ApiClient, token: str) -> list[dict[str, Any]]:
    r = await api.http.get("/api/mailbox", headers=api.auth(token))
    assert r.status_code == 200, r.text
    return list(r.json())


async def _wait_emails(api: ApiClient, token: str, n: int, within: float = 15.0) -> None:
    deadline = asyncio.get_running_loop().time() + within
    while len(await _mailbox(api, token)) < n:
        assert asyncio.get_running_loop().time() < deadline, "confirmation email not sent"
        await asyncio.sleep(0.1)


def assert_contiguous(receipts: list[str]) -> None:
    """Unique, and one unbroken run (the module's server is shared by its tests, which run
    one after another, so a test's receipts follow the previous test's)."""
    assert len(set(receipts)) == len(receipts), Counter(receipts).most_common(3)
    seqs = sorted(int(re.fullmatch(r"SC\d{4}(\d{6})", r).group(1))  # type: ignore[union-attr]
                  for r in receipts)
    assert seqs == list(range(seqs[0], seqs[0] + len(receipts))), seqs


# PostgreSQL's storm runs on three instances (test_phonepe_cluster.py).
@pytest.mark.parametrize("phonepe_server", ["sqlite"], indirect=True)
async def test_120_users_pay_at_once_through_phonepe(pp: ApiClient) -> None:
    """The service-charge case: every payment completes, receipts unique and contiguous,
    never more than PAYGUARD_PROVIDER_CONCURRENCY calls at the gateway at once."""
    await pp.http.post("/sim/phonepe/stats/reset")
    users = await asyncio.gather(*(pp.create_user() for _ in range(120)))
    results = await asyncio.gather(*(retry_checkout(pp, u["token"], {"topup_amount": TOPUP})
                                     for u in users))
    assert all(r.status_code == 201 for r, _ in results), [r.text for r, _ in results][:3]
    sessions = [r.json() for r, _ in results]
    assert {s["currency"] for s in sessions} == {"INR"}
    assert len({s["session_id"] for s in sessions}) == 120
    await asyncio.gather(*(pay_phonepe(pp, s["session_id"]) for s in sessions))
    done = await asyncio.gather(*(wait_for_status(pp, u["token"], s["purchase_id"],
                                                  "completed", within=90)
                                  for u, s in zip(users, sessions, strict=True)))
    assert_contiguous([p["receipt_number"] for p in done])
    balances = await asyncio.gather(*(pp.balance(u["token"]) for u in users))
    assert balances == [TOPUP] * 120
    stats = await sim_stats(pp.http)
    assert 1 <= stats["max_in_flight"] <= CONCURRENCY, stats
    retried = sum(n for _, n in results)
    print(f"gateway calls {stats['calls']}, at most {stats['max_in_flight']} in flight; "
          f"{retried} checkout retries after 503")
    audit = await pp.audit()
    assert audit["ok"], audit["problems"]


async def test_each_callback_five_times_out_of_order_applies_once(pp: ApiClient) -> None:
    users = await asyncio.gather(*(pp.create_user() for _ in range(4)))
    sessions = [(await checkout(pp, u["token"], {"topup_amount": TOPUP})).json() for u in users]
    outcomes = ["success", "success", "failure", "success"]
    await asyncio.gather(*(pay_phonepe(pp, s["session_id"], o, duplicates=5)
                           for s, o in zip(sessions, outcomes, strict=True)))
    orders = [s["session_id"] for s in sessions]
    await wait_delivered(pp.http, orders, 20)
    rows = await deliveries(pp.http, orders)
    assert Counter(d["event_type"] for d in rows) == {"PG_ORDER_COMPLETED": 15,
                                                      "PG_ORDER_FAILED": 5}
    assert all(d["state"] == "delivered" for d in rows), rows
    for u, s, o in zip(users, sessions, outcomes, strict=True):
        want = "completed" if o == "success" else "failed"
        p = await wait_for_status(pp, u["token"], s["purchase_id"], want)
        assert await pp.balance(u["token"]) == (TOPUP if o == "success" else 0)
        if o == "success":
            await _wait_emails(pp, u["token"], 1)
            assert p["receipt_number"]
    await asyncio.sleep(1.5)  # let a stray second fulfilment or email show, if any
    for u, o in zip(users, outcomes, strict=True):
        mails = await _mailbox(pp, u["token"])
        assert len(mails) == (1 if o == "success" else 0), mails
    assert_contiguous([(await _purchase(pp, u["token"], s["purchase_id"]))["receipt_number"]
                       for u, s, o in zip(users, sessions, outcomes, strict=True)
                       if o == "success"])
    audit = await pp.audit()
    assert audit["ok"], audit["problems"]


async def test_dropped_callbacks_the_poller_completes_and_fails(pp: ApiClient) -> None:
    users = await asyncio.gather(*(pp.create_user() for _ in range(5)))
    sessions = [(await checkout(pp, u["token"], {"topup_amount": TOPUP})).json() for u in users]
    outcomes = ["success", "failure", "success", "failure", "success"]
    await asyncio.gather(*(pay_phonepe(pp, s["session_id"], o, drop=True)
                           for s, o in zip(sessions, outcomes, strict=True)))
    for u, s, o in zip(users, sessions, outcomes, strict=True):
        await wait_for_status(pp, u["token"], s["purchase_id"],
                              "completed" if o == "success" else "failed", within=30)
    rows = await deliveries(pp.http, [s["session_id"] for s in sessions])
    assert len(rows) == 5 and {d["state"] for d in rows} == {"dropped"}  # no callback ever arrived
    balances = [await pp.balance(u["token"]) for u in users]
    assert balances == [TOPUP if o == "success" else 0 for o in outcomes]
    audit = await pp.audit()
    assert audit["ok"], audit["problems"]


async def test_pending_for_a_while_then_success_completes_once(pp: ApiClient) -> None:
    user = await pp.create_user()
    session = (await checkout(pp, user["token"], {"topup_amount": TOPUP})).json()
    await pay_phonepe(pp, session["session_id"], "pending")
    before = (await sim_stats(pp.http))["calls"]
    await asyncio.sleep(2.0)  # the poller looks several times and finds it PENDING
    assert (await _purchase(pp, user["token"], session["purchase_id"]))["status"] == "pending"
    assert (await sim_stats(pp.http))["calls"] > before + 2  # it was polled
    await pay_phonepe(pp, session["session_id"], "success", duplicates=3)
    done = await wait_for_status(pp, user["token"], session["purchase_id"], "completed")
    await wait_delivered(pp.http, [session["session_id"]], 3)
    await _wait_emails(pp, user["token"], 1)
    await asyncio.sleep(1.0)  # the poller runs on; nothing may be applied twice
    assert await pp.balance(user["token"]) == TOPUP
    assert len(await _mailbox(pp, user["token"])) == 1
    entries = (await pp.http.get("/api/wallet/entries",
                                 headers=pp.auth(user["token"]))).json()["entries"]
    assert [e["amount"] for e in entries] == [TOPUP]
    assert done["receipt_number"]


async def test_callback_with_a_wrong_authorization_is_refused(pp: ApiClient) -> None:
    user = await pp.create_user()
    session = (await checkout(pp, user["token"], {"topup_amount": TOPUP})).json()
    forged = json.dumps({"event": "checkout.order.completed", "type": "PG_ORDER_COMPLETED",
                         "payload": {"merchantOrderId": session["session_id"],
                                     "orderId": "OMO-forged", "state": "COMPLETED",
                                     "amount": TOPUP}})
    wrong = hashlib.sha256(b"payguard-sim:not-the-password").hexdigest()
    for headers in ({"Authorization": wrong}, {}, {"Authorization": "Bearer x"}):
        r = await pp.http.post("/api/webhooks/phonepe", content=forged,
                               headers={"content-type": "application/json", **headers})
        assert r.status_code == 400, r.text
        assert r.headers["content-type"].startswith("application/problem+json")
    # Even with the right header, the body is only a nudge: PhonePe says PENDING.
    right = hashlib.sha256(b"payguard-sim:payguard-sim-callback-password").hexdigest()
    r = await pp.http.post("/api/webhooks/phonepe", content=forged,
                           headers={"content-type": "application/json", "Authorization": right})
    assert r.status_code == 200, r.text
    await asyncio.sleep(0.5)
    p = await _purchase(pp, user["token"], session["purchase_id"])
    assert (p["status"], p["receipt_number"]) == ("pending", None)
    assert await pp.balance(user["token"]) == 0


async def test_class_rep_seats_topups_and_refunds_with_phonepe(pp: ApiClient) -> None:
    program = await create_program(pp, limit=2)
    users = await asyncio.gather(*(pp.create_user() for _ in range(4)))
    body = {"program_id": program["id"], "class_rep": True}
    responses = await asyncio.gather(*(checkout(pp, u["token"], body) for u in users))
    assert outcome_counts(responses) == {(201, None): 2, (409, "CLASS_REP_LIMIT_REACHED"): 2}
    winners = [(u, r.json()) for u, r in zip(users, responses, strict=True)
               if r.status_code == 201]
    await asyncio.gather(*(pay_phonepe(pp, s["session_id"]) for _, s in winners))
    done = [await wait_for_status(pp, u["token"], s["purchase_id"], "completed")
            for u, s in winners]
    assert [p["pricing"]["final_price"] for p in done] == [8_000, 8_000]

    # A refund goes back through PhonePe (merchant refund id derived from the purchase),
    # twice at once: one refund at PhonePe, one seat released.
    refunded_id = done[0]["id"]
    key = str(uuid.uuid4())
    refunds = await asyncio.gather(*(pp.http.post(
        f"/api/admin/purchases/{refunded_id}/refund", json={"reason": "requested"},
        headers=pp.auth(pp.admin_token, key)) for _ in range(2)))
    assert {r.status_code for r in refunds} <= {200, 409}
    assert any(r.status_code == 200 and r.json()["status"] == "refunded" for r in refunds)
    program_now = (await pp.http.get(f"/api/programs/{program['id']}",
                                     headers=pp.auth(users[0]["token"]))).json()
    assert program_now["class_rep_taken"] == 1
    orders = [s["session_id"] for _, s in winners]
    await wait_delivered(pp.http, orders, 3)  # two orders completed, one refund completed
    refund_callbacks = [d for d in await deliveries(pp.http, orders)
                        if d["event_type"] == "PG_REFUND_COMPLETED"]
    assert len(refund_callbacks) == 1 and refund_callbacks[0]["state"] == "delivered"
    loser = next(u for u, r in zip(users, responses, strict=True) if r.status_code == 409)
    again = await checkout(pp, loser["token"], body)
    assert again.status_code == 201, again.text
    audit = await pp.audit()
    assert audit["ok"], audit["problems"]


@pytest.mark.parametrize("missing", ["PAYGUARD_PHONEPE_CLIENT_SECRET",
                                     "PAYGUARD_PHONEPE_CALLBACK_PASSWORD"])
def test_production_mode_refuses_phonepe_without_its_credentials(
        tmp_path: Path, missing: str) -> None:
    """PAYGUARD_PROVIDER=phonepe with a credential unset (so the simulator's public default)
    does not start: anyone could otherwise make callbacks pass the Authorization check."""
    live = LiveServer(tmp_path / "data", f"sqlite:///{tmp_path / 'payguard.db'}")
    env = {**live.environment(), "PAYGUARD_PROVIDER": "phonepe", "PAYGUARD_CURRENCY": "INR",
           "PAYGUARD_PHONEPE_CLIENT_ID": "M22OPERATOR",
           "PAYGUARD_PHONEPE_CLIENT_SECRET": "operator-secret",
           "PAYGUARD_PHONEPE_CALLBACK_USERNAME": "operator",
           "PAYGUARD_PHONEPE_CALLBACK_PASSWORD": "operator-password"}
    del env[missing]
    done = subprocess.run([sys.executable, "-m", "payguard", "serve", "--port",
                           str(live.port)], env=env, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "refusing to start with PAYGUARD_PROVIDER=phonepe" in done.stdout
    assert missing in done.stdout
