"""Helpers for end-to-end tests against the PhonePe simulator (mounted at /sim/phonepe)."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import httpx

from tests.support.api import ApiClient

__all__ = ["PHONEPE_ENV", "deliveries", "pay_phonepe", "retry_checkout", "sim_stats",
           "wait_delivered"]

#: A server that runs the PhonePe simulator in-process, polling on a fast schedule.
PHONEPE_ENV = {
    "PAYGUARD_SIMULATED_PROVIDER": "phonepe",
    "PAYGUARD_CURRENCY": "INR",
    "PAYGUARD_PHONEPE_POLL_FIRST": "0.6",
    "PAYGUARD_PHONEPE_POLL_SCALE": "0.05",  # 3 s -> 0.15 s, 60 s -> 3 s
    "PAYGUARD_PHONEPE_POLL_INTERVAL": "0.2",
}


async def pay_phonepe(api: ApiClient, merchant_order_id: str, outcome: str = "success", *,
                      prefix: str = "/sim/phonepe", **faults: Any) -> dict[str, Any]:
    """The buyer on the hosted page; ``faults``: duplicates, drop, delay_ms."""
    r = await api.http.post(f"{prefix}/pay/{merchant_order_id}",
                            json={"outcome": outcome, **faults})
    assert r.status_code == 200, r.text
    return dict(r.json())


async def deliveries(http: httpx.AsyncClient, order_ids: list[str], *,
                     prefix: str = "/sim/phonepe") -> list[dict[str, Any]]:
    """The simulator's callback deliveries about these merchant orders."""
    rows = []
    for order_id in order_ids:
        r = await http.get(f"{prefix}/deliveries", params={"merchant_order_id": order_id})
        assert r.status_code == 200, r.text
        rows.extend(r.json()["data"])
    return rows


async def wait_delivered(http: httpx.AsyncClient, order_ids: list[str], expected: int, *,
                         prefix: str = "/sim/phonepe", within: float = 30.0) -> None:
    """Wait until ``expected`` callback deliveries about these orders have finished."""
    deadline = asyncio.get_running_loop().time() + within
    while True:
        rows = await deliveries(http, order_ids, prefix=prefix)
        done = [d for d in rows if d["state"] in ("delivered", "failed")]
        if len(done) >= expected:
            return
        assert asyncio.get_running_loop().time() < deadline, rows
        await asyncio.sleep(0.1)


async def sim_stats(http: httpx.AsyncClient, prefix: str = "/sim/phonepe") -> dict[str, int]:
    r = await http.get(f"{prefix}/stats")
    assert r.status_code == 200, r.text
    return dict(r.json())


async def retry_checkout(api: ApiClient, token: str, body: dict[str, Any]
                         ) -> tuple[httpx.Response, int]:
    """A client that retries a 503 (queue full) with the same key, as the API asks."""
    key, retries = str(uuid.uuid4()), 0
    while True:
        r = await api.http.post("/api/checkout/sessions", json=body,
                                headers=api.auth(token, key))
        if r.status_code != 503:
            return r, retries
        assert r.json()["code"] == "PROVIDER_UNAVAILABLE", r.text
        retries += 1
        assert retries < 200, r.text
        await asyncio.sleep(0.2)
