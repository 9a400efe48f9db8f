"""Issue 6's must-shows for the reconciler, on PostgreSQL with live servers whose simulator
drops every webhook: only the reconciler can finish a paid purchase."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from tests.support.api import ApiClient, checkout, create_program, pay, wait_for_status
from tests.support.server import LiveServer

DROP = {"PAYGUARD_SIM_DROP_WEBHOOKS": "1", "PAYGUARD_RECONCILE_INTERVAL": "0"}


async def _reconcile(api: ApiClient, older_than: float = 0) -> dict[str, Any]:
    r = await api.http.post(f"/api/admin/reconcile?older_than={older_than}",
                            headers=api.auth(api.admin_token))
    assert r.status_code == 200, r.text
    return dict(r.json())


async def _taken(api: ApiClient, program_id: str, token: str) -> int:
    r = await api.http.get(f"/api/programs/{program_id}", headers=api.auth(token))
    return int(r.json()["class_rep_taken"])


async def _mail_count(api: ApiClient, token: str) -> int:
    r = await api.http.get("/api/mailbox", headers=api.auth(token))
    return len(r.json())


async def _wait_mail(api: ApiClient, token: str, n: int) -> None:
    deadline = asyncio.get_running_loop().time() + 15.0
    while await _mail_count(api, token) < n:
        assert asyncio.get_running_loop().time() < deadline, "confirmation email not delivered"
        await asyncio.sleep(0.1)


def _sim_sessions(data_dir: Path, purchase_id: str) -> list[str]:
    with sqlite3.connect(data_dir / "simulator.db") as conn:
        rows = conn.execute("SELECT id, data FROM sessions").fetchall()
    return [sid for sid, data in rows
            if json.loads(data).get("metadata", {}).get("purchase_id") == purchase_id]


Bought = list[tuple[dict[str, Any], dict[str, Any]]]  # (user, checkout session)


async def _paid_but_unnotified(api: ApiClient, n_program: int, n_product: int
                               ) -> tuple[dict[str, Any], Bought]:
    program = await create_program(api, limit=n_program)
    product = await api.create_product(1_000, n_product)
    users = await asyncio.gather(*(api.create_user() for _ in range(n_program + n_product)))
    bodies = ([{"program_id": program["id"], "class_rep": True}] * n_program
              + [{"product_id": product["id"]}] * n_product)
    responses = await asyncio.gather(*(checkout(api, u["token"], b)
                                       for u, b in zip(users, bodies, strict=True)))
    assert all(r.status_code == 201 for r in responses), [r.text for r in responses]
    sessions = [r.json() for r in responses]
    await asyncio.gather(*(pay(api, s["session_id"]) for s in sessions))
    return program, list(zip(users, sessions, strict=True))


async def test_paid_purchases_with_dropped_webhooks_complete_once_under_3_reconciles(
    pg_url: str, tmp_path: Path,
) -> None:
    server = LiveServer(tmp_path / "data", pg_url, env=DROP).start()
    try:
        async with ApiClient(server.url, server.admin_token) as api:
            program, bought = await _paid_but_unnotified(api, 4, 2)
            await asyncio.sleep(0.5)  # room for a webhook, were one ever sent
            stuck = await api.http.get("/api/admin/purchases/stuck?older_than=0",
                                       headers=api.auth(api.admin_token))
            assert stuck.status_code == 200
            assert {p["id"] for p in stuck.json()} == {s["purchase_id"] for _, s in bought}
            assert all(p["status"] == "pending" for p in stuck.json())

            runs = await asyncio.gather(*(_reconcile(api) for _ in range(3)))
            assert sum(r["completed"] for r in runs) == len(bought)
            assert sum(r["checked"] for r in runs) == len(bought)
            done = [await wait_for_status(api, u["token"], s["purchase_id"], "completed",
                                          within=1) for u, s in bought]
            receipts = [p["receipt_number"] for p in done]
            assert None not in receipts and len(set(receipts)) == len(bought)
            for u, _ in bought:
                await _wait_mail(api, u["token"], 1)
            await asyncio.sleep(0.3)
            assert [await _mail_count(api, u["token"]) for u, _ in bought] == [1] * len(bought)
            assert await _taken(api, program["id"], bought[0][0]["token"]) == 4
            # Nothing is left to do: a further run completes nothing.
            again = await _reconcile(api)
            assert (again["checked"], again["completed"]) == (0, 0)
            empty = await api.http.get("/api/admin/purchases/stuck?older_than=0",
                                       headers=api.auth(api.admin_token))
            assert empty.json() == []
            audit = await api.audit()
            assert audit["ok"], audit["problems"]
    finally:
        server.stop()


# Runs in a child process: a real checkout (same code, same idempotency key handling as the
# HTTP route) that SIGKILLs itself right after the provider created the session, before
# phase 2 records it.
CRASHING_CHECKOUT = """
import asyncio, os, signal, sys
from payguard.bootstrap import build_context
from payguard.config import Settings
from payguard.service.checkout import CHECKOUT_OPERATION, CheckoutTarget, start_checkout
from payguard.service.principal import Principal
from payguard.api.deps import json_response

user_id, program_id, key, body = sys.argv[1:5]

async def main():
    ctx = await build_context(Settings())
    create = ctx.provider.create_checkout_session

    async def create_then_die(**kwargs):
        session = await create(**kwargs)
        print(session.id, flush=True)
        os.kill(os.getpid(), signal.SIGKILL)

    ctx.provider.create_checkout_session = create_then_die

    async def handler(claim):
        status, payload = await start_checkout(
            ctx, Principal("user", user_id), CheckoutTarget(program_id=program_id,
            class_rep=True), claim)
        return json_response(payload, status)

    await ctx.guard.execute_phased(principal=f"user:{user_id}", key=key, method="POST",
                                   path="/api/checkout/sessions", body=body.encode(),
                                   handler=handler, operation=CHECKOUT_OPERATION)

asyncio.run(main())
"""


async def test_crash_between_session_created_and_recorded_is_repaired(
    pg_url: str, tmp_path: Path,
) -> None:
    data = tmp_path / "data"
    env = {**DROP, "PAYGUARD_IDEMPOTENCY_LOCK_TIMEOUT": "1"}
    server = LiveServer(data, pg_url, env=env).start()
    try:
        async with ApiClient(server.url, server.admin_token) as api:
            program = await create_program(api, limit=1)
            user = await api.create_user()
            key = str(uuid.uuid4())
            body = {"program_id": program["id"], "class_rep": True}
            child_env = server.environment() | {
                "PAYGUARD_STRIPE_API_BASE": f"{server.url}/sim",
                "PAYGUARD_DATA_DIR": str(tmp_path / "child"),
            }
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-c", CRASHING_CHECKOUT, user["id"], program["id"], key,
                json.dumps(body), env=child_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            out, err = await asyncio.wait_for(proc.communicate(), 60)
            assert proc.returncode == -9, err.decode()[-2000:]
            session_id = out.decode().strip()
            assert session_id.startswith("cs_")

            listed = await api.http.get("/api/purchases", headers=api.auth(user["token"]))
            (purchase,) = listed.json()
            assert purchase["status"] == "pending" and purchase["provider_session_id"] is None
            assert _sim_sessions(data, purchase["id"]) == [session_id]
            assert await _taken(api, program["id"], user["token"]) == 1

            await asyncio.sleep(1.2)  # the dead request's key lock times out
            run = await _reconcile(api)
            assert (run["checked"], run["keys_completed"]) == (1, 1), run
            assert _sim_sessions(data, purchase["id"]) == [session_id]  # no second session
            p = (await api.http.get(f"/api/purchases/{purchase['id']}",
                                    headers=api.auth(user["token"]))).json()
            assert (p["status"], p["provider_session_id"]) == ("pending", session_id)
            # The client's retry of the dead request gets that same checkout.
            retry = await checkout(api, user["token"], body, key=key)
            assert retry.status_code == 201, retry.text
            assert retry.headers["idempotent-replayed"] == "true"
            assert (retry.json()["session_id"], retry.json()["purchase_id"]) == (
                session_id, purchase["id"])

            # The buyer walks away; the session expires at the provider, no webhook comes.
            r = await api.http.post(f"/sim/v1/checkout/sessions/{session_id}/expire",
                                    headers={"Authorization": "Bearer sk_test_payguard_simulated"})
            assert r.status_code == 200, r.text
            run = await _reconcile(api)
            assert (run["expired"], run["released"]) == (1, 1), run
            assert await _taken(api, program["id"], user["token"]) == 0
            assert _sim_sessions(data, purchase["id"]) == [session_id]
            audit = await api.audit()
            assert audit["ok"], audit["problems"]
    finally:
        server.stop()


def _samples(text: str, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    out: dict[tuple[tuple[str, str], ...], float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name:
                out[tuple(sorted(s.labels.items()))] = s.value
    return out


async def test_two_servers_with_reconcile_loops_handle_each_purchase_once(
    pg_url: str, tmp_path: Path,
) -> None:
    data = tmp_path / "data"  # shared: both mounted simulators use one simulator.db
    env = {"PAYGUARD_SIM_DROP_WEBHOOKS": "1", "PAYGUARD_RECONCILE_INTERVAL": "0.3",
           "PAYGUARD_STUCK_AFTER": "0"}
    servers = [LiveServer(data, pg_url, env=env).start() for _ in range(2)]
    try:
        async with ApiClient(servers[0].url, servers[0].admin_token) as api:
            program, bought = await _paid_but_unnotified(api, 4, 2)
            await asyncio.gather(*(wait_for_status(api, u["token"], s["purchase_id"],
                                                   "completed") for u, s in bought))
            for u, _ in bought:
                await _wait_mail(api, u["token"], 1)
            completed = 0.0
            for server in servers:
                async with ApiClient(server.url, server.admin_token) as each:
                    text = (await each.http.get("/metrics")).text
                runs = _samples(text, "payguard_reconciler_runs_total")
                assert sum(runs.values()) >= 1  # both loops are running
                completed += _samples(text, "payguard_reconciler_actions_total").get(
                    (("action", "completed"),), 0.0)
            assert completed == len(bought)
            receipts = [(await wait_for_status(api, u["token"], s["purchase_id"], "completed"))
                        ["receipt_number"] for u, s in bought]
            assert len(set(receipts)) == len(bought)
            assert [await _mail_count(api, u["token"]) for u, _ in bought] == [1] * len(bought)
            assert await _taken(api, program["id"], bought[0][0]["token"]) == 4
            audit = await api.audit()
            assert audit["ok"], audit["problems"]
    finally:
        for server in servers:
            server.stop()
