"""A thin async client for tests: admin setup calls and user calls with fresh keys."""

from __future__ import annotations

import uuid
from collections import Counter
from typing import Any

import httpx

__all__ = ["ApiClient"]


class ApiClient:
    def __init__(self, base_url: str, admin_token: str, *, max_connections: int = 300) -> None:
        self.admin_token = admin_token
        self.http = httpx.AsyncClient(
            base_url=base_url, timeout=120,
            limits=httpx.Limits(max_connections=max_connections,
                                max_keepalive_connections=max_connections,
                                keepalive_expiry=2.0),
        )

    async def close(self) -> None:
        await self.http.aclose()

    async def __aenter__(self) -> ApiClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @staticmethod
    def auth(token: str, key: str | None = None) -> dict[str, str]:
        headers = {"Authorization": f"Bearer {token}"}
        if key is not None:
            headers["Idempotency-Key"] = key
        return headers

    async def admin_post(self, path: str, body: Any, *, key: str | None = None,
                         expect: int | None = 201) -> Any:
        r = await self.http.post(path, json=body, headers=self.auth(self.admin_token, key))
        if expect is not None:
            assert r.status_code == expect, r.text
        return r.json()

    async def create_user(self, email: str | None = None, *, balance: int = 0) -> dict[str, Any]:
        user = await self.admin_post("/api/admin/users",
                                     {"email": email or f"{uuid.uuid4().hex[:10]}@t.test"})
        if balance:
            await self.admin_post(f"/api/admin/wallets/{user['id']}/adjustments",
                                  {"amount": balance, "reason": "test funds"},
                                  key=str(uuid.uuid4()))
        return dict(user)

    async def create_product(self, price: int, n_items: int, sku: str | None = None
                             ) -> dict[str, Any]:
        sku = sku or f"SKU-{uuid.uuid4().hex[:8]}"
        return dict(await self.admin_post("/api/admin/products", {
            "sku": sku, "name": sku, "price": price,
            "items": [f"{sku}-item-{i}" for i in range(n_items)],
        }))

    async def purchase(self, token: str, product_id: str, quantity: int = 1, *,
                       key: str | None = None) -> httpx.Response:
        return await self.http.post(
            "/api/purchases", json={"product_id": product_id, "quantity": quantity},
            headers=self.auth(token, key or str(uuid.uuid4())),
        )

    async def balance(self, token: str) -> int:
        r = await self.http.get("/api/wallet", headers=self.auth(token))
        assert r.status_code == 200, r.text
        return int(r.json()["balance"])

    async def audit(self) -> dict[str, Any]:
        r = await self.http.get("/api/admin/audit", headers=self.auth(self.admin_token))
        assert r.status_code == 200, r.text
        return dict(r.json())


def outcome_counts(responses: list[httpx.Response]) -> Counter[tuple[int, str | None]]:
    """How many responses had each (status, problem code); code is None below 400."""
    out: Counter[tuple[int, str | None]] = Counter()
    for r in responses:
        out[(r.status_code, None if r.status_code < 400 else r.json().get("code"))] += 1
    return out


async def create_program(api: ApiClient, *, limit: int, full_price: int = 10_000,
                         class_rep_discount: int = 2_000) -> dict[str, Any]:
    return dict(await api.admin_post("/api/admin/programs", {
        "title": f"Program {uuid.uuid4().hex[:6]}", "full_price": full_price,
        "class_rep_limit": limit, "class_rep_discount": class_rep_discount,
        "early_bird_discount": 0,
    }))


async def checkout(api: ApiClient, token: str, body: dict[str, Any], *,
                   key: str | None = None) -> httpx.Response:
    return await api.http.post("/api/checkout/sessions", json=body,
                               headers=api.auth(token, key or str(uuid.uuid4())))


async def pay(api: ApiClient, session_id: str, outcome: str = "succeeded", *,
              prefix: str = "/sim") -> httpx.Response:
    """Pay on the simulator's hosted page (mounted at /sim, or standalone with prefix "")."""
    r = await api.http.post(f"{prefix}/checkout/{session_id}/pay", json={"outcome": outcome})
    assert r.status_code == 200, r.text
    return r


async def wait_for_status(api: ApiClient, token: str, purchase_id: str, status: str,
                          within: float = 20.0, *,
                          refund_status: str | None = None) -> dict[str, Any]:
    """Poll until the purchase has ``status`` (and ``refund_status``, when given: a card
    refund reaches the provider after the refund itself committed)."""
    import asyncio

    deadline = asyncio.get_running_loop().time() + within
    while True:
        r = await api.http.get(f"/api/purchases/{purchase_id}", headers=api.auth(token))
        assert r.status_code == 200, r.text
        body = dict(r.json())
        if body["status"] == status and refund_status in (None, body["refund_status"]):
            return body
        assert asyncio.get_running_loop().time() < deadline, (
            f"still {body['status']} (refund {body['refund_status']})")
        await asyncio.sleep(0.1)
