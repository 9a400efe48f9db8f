"""Webhook signatures at the service's endpoint, and exactly one email per purchase over SMTP."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import time
from collections import Counter
from pathlib import Path

from tests.support.api import ApiClient, checkout, create_program, pay, wait_for_status
from tests.support.server import LiveServer
from tests.support.smtp import SmtpServer, free_port

SECRET = "whsec_test_" + "x" * 24


def stripe_header(body: bytes, secret: str, t: int | None = None, extra_v1: int = 0) -> str:
    """Made exactly the way Stripe makes it: t=<unix>,v1=<hex HMAC-SHA256 of "t.body">."""
    t = int(time.time()) if t is None else t
    mac = hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    wrong = ["v1=" + "0" * 64 for _ in range(extra_v1)]
    return ",".join([f"t={t}", *wrong, f"v1={mac}", "v0=ignored"])


async def test_signatures_are_verified_and_bad_ones_change_nothing(
    db_url: str, tmp_path: Path,
) -> None:
    env = {"PAYGUARD_SIM_DROP_WEBHOOKS": "1", "PAYGUARD_STRIPE_WEBHOOK_SECRET": SECRET}
    server = LiveServer(tmp_path / "data", db_url, env=env).start()
    try:
        async with ApiClient(server.url, server.admin_token) as api:
            program = await create_program(api, limit=2)
            user = await api.create_user()
            session = (await checkout(api, user["token"], {"program_id": program["id"],
                                                           "class_rep": True})).json()
            paid = (await pay(api, session["session_id"])).json()["session"]
            event = {"id": "evt_sig_test_1", "object": "event", "type":
                     "checkout.session.completed", "created": int(time.time()),
                     "data": {"object": paid}}
            body = json.dumps(event).encode()

            async def post(sig: str | None) -> int:
                headers = {"content-type": "application/json"}
                if sig is not None:
                    headers["Stripe-Signature"] = sig
                r = await api.http.post("/api/webhooks/stripe", content=body, headers=headers)
                if r.status_code >= 400:
                    assert r.headers["content-type"] == "application/problem+json"
                return r.status_code

            assert await post(None) == 400
            assert await post(stripe_header(body, "whsec_wrong")) == 400
            assert await post(stripe_header(body, SECRET, t=int(time.time()) - 400)) == 400
            assert await post(stripe_header(body + b" ", SECRET)[:-1] + "0") == 400
            pending = await api.http.get(f"/api/purchases/{session['purchase_id']}",
                                         headers=api.auth(user["token"]))
            assert pending.json()["status"] == "pending"

            assert await post(stripe_header(body, SECRET, extra_v1=2)) == 200
            done = await wait_for_status(api, user["token"], session["purchase_id"],
                                         "completed", within=5)
            assert done["receipt_number"]
            again = await api.http.post("/api/webhooks/stripe", content=body, headers={
                "Stripe-Signature": stripe_header(body, SECRET)})
            assert again.json() == {"received": True, "duplicate": True}
            # Unknown types and unknown sessions: 200, recorded, ignored.
            other = json.dumps({"id": "evt_other", "type": "customer.created",
                                "data": {"object": {"id": "cus_1"}}}).encode()
            r = await api.http.post("/api/webhooks/stripe", content=other, headers={
                "Stripe-Signature": stripe_header(other, SECRET)})
            assert r.json() == {"received": True, "duplicate": False}
    finally:
        server.stop()


async def test_a_real_smtp_server_gets_exactly_one_email_per_completed_purchase(
    db_url: str, tmp_path: Path,
) -> None:
    smtp = SmtpServer(free_port())
    smtp.start()
    env = {"PAYGUARD_SMTP_URL": smtp.url, "PAYGUARD_SIM_DUPLICATE_DELIVERIES": "5"}
    server = LiveServer(tmp_path / "data", db_url, env=env).start()
    try:
        async with ApiClient(server.url, server.admin_token) as api:
            program = await create_program(api, limit=10)
            product = await api.create_product(900, 10)
            users = await asyncio.gather(*(api.create_user() for _ in range(4)))
            sessions = []
            for i, u in enumerate(users):
                body = ({"program_id": program["id"], "class_rep": True} if i % 2
                        else {"product_id": product["id"]})
                sessions.append((u, (await checkout(api, u["token"], body)).json()))
            await asyncio.gather(*(pay(api, s["session_id"]) for _, s in sessions))
            orders = []
            for u, s in sessions:
                p = await wait_for_status(api, u["token"], s["purchase_id"], "completed")
                orders.append(p["order_number"])
            for _ in range(100):
                if len(smtp.messages) >= len(orders):
                    break
                await asyncio.sleep(0.1)
            await asyncio.sleep(1.0)  # room for any duplicate to arrive
            subjects = Counter(str(m["Subject"]) for m in smtp.messages)
            assert len(smtp.messages) == len(orders)
            for order in orders:
                assert sum(n for s, n in subjects.items() if order in s) == 1
            assert {str(m["To"]) for m in smtp.messages} == {u["email"] for u in users}
    finally:
        server.stop()
        smtp.stop()
