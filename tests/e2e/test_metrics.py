"""GET /metrics on a 2-worker server (prometheus multi-process mode) counts what the test did,
whichever worker answers the scrape."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from tests.support.api import ApiClient, checkout, pay, wait_for_status
from tests.support.server import LiveServer

Labels = tuple[tuple[str, str], ...]


def _samples(text: str) -> dict[str, dict[Labels, float]]:
    out: dict[str, dict[Labels, float]] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out.setdefault(s.name, {})[tuple(sorted(s.labels.items()))] = s.value
    return out


async def test_metrics_count_requests_replays_webhooks_and_reconciles(
    pg_url: str, tmp_path: Path,
) -> None:
    env = {"PAYGUARD_SIM_DUPLICATE_DELIVERIES": "2", "PAYGUARD_RECONCILE_INTERVAL": "0"}
    server = LiveServer(tmp_path / "data", pg_url, env=env, workers=2).start()
    try:
        async with ApiClient(server.url, server.admin_token) as api:
            product = await api.create_product(500, 3)
            user = await api.create_user(balance=5_000)
            key = str(uuid.uuid4())
            first = await api.purchase(user["token"], product["id"], key=key)
            replay = await api.purchase(user["token"], product["id"], key=key)
            reused = await api.purchase(user["token"], product["id"], 2, key=key)
            assert (first.status_code, replay.status_code, reused.status_code) == (201, 201, 422)
            session = (await checkout(api, user["token"], {"product_id": product["id"]})).json()
            await pay(api, session["session_id"])
            await wait_for_status(api, user["token"], session["purchase_id"], "completed")
            run = await api.http.post("/api/admin/reconcile?older_than=0",
                                      headers=api.auth(api.admin_token))
            assert run.status_code == 200 and run.json()["checked"] == 0

            # The duplicate delivery lands after the first: poll until it is counted.
            webhook = (("outcome", "duplicate"), ("type", "checkout.session.completed"))
            deadline = asyncio.get_running_loop().time() + 15
            while True:
                r = await api.http.get("/metrics")
                assert r.status_code == 200
                assert r.headers["content-type"].startswith("text/plain")
                m = _samples(r.text)
                if m.get("payguard_webhook_events_total", {}).get(webhook) == 1:
                    break
                assert asyncio.get_running_loop().time() < deadline, r.text[-3000:]
                await asyncio.sleep(0.2)

            requests = m["payguard_http_requests_total"]
            purchases = (("method", "POST"), ("route", "/api/purchases"))
            assert requests[(*purchases, ("status", "201"))] == 2  # first + replay
            assert requests[(*purchases, ("status", "422"))] == 1
            assert requests[(("method", "POST"), ("route", "/sim/checkout/{session_id}/pay"),
                             ("status", "200"))] == 1
            latency = m["payguard_http_request_duration_seconds_count"]
            assert latency[purchases] == 3
            idem = m["payguard_idempotency_requests_total"]
            assert idem[(("outcome", "replayed"),)] == 1
            assert idem[(("outcome", "mismatched"),)] == 1
            events = m["payguard_webhook_events_total"]
            assert events[(("outcome", "completed"), ("type", "checkout.session.completed"))] == 1
            assert m["payguard_reconciler_runs_total"][(("result", "ok"),)] == 1
            provider = m["payguard_provider_request_duration_seconds_count"]
            assert provider[(("operation", "create_session"),)] == 1
            # One retrieve for the event (the applier's nudge reads the session); the
            # duplicate delivery is answered from the inbox and asks the provider nothing.
            assert provider[(("operation", "retrieve_session"),)] == 1
            assert m["payguard_lock_acquired_total"][()] >= 1  # the checkout lock (+ reconciler)
            assert m["payguard_lock_timeouts_total"][()] == 0
            assert (("operation", "create_session"),) not in m.get(
                "payguard_provider_errors_total", {})
            assert "payguard_outbox_backlog" in m and "payguard_provider_queue_depth" in m
            # Every acknowledged event was applied: nothing waits in the inbox.
            assert m["payguard_inbox_pending"][()] == 0
            assert (("outcome", "apply_failed"), ("type", "checkout.session.completed")) \
                not in events
    finally:
        server.stop()
