"""Bad input gets the documented status and code as problem+json, and changes nothing."""

from __future__ import annotations

import uuid

import pytest

from tests.support.api import ApiClient

PRICE = 400


async def _state(api: ApiClient, token: str, product_id: str) -> tuple[int, int, int, object]:
    balance = await api.balance(token)
    stock = (await api.http.get(f"/api/products/{product_id}",
                                headers=api.auth(token))).json()["stock"]
    purchases = len((await api.http.get("/api/purchases", headers=api.auth(token))).json())
    seqs = (await api.http.get("/api/admin/sequences", headers=api.auth(api.admin_token))).json()
    return balance, stock, purchases, seqs


@pytest.fixture
async def world(api: ApiClient) -> dict[str, object]:
    alice = await api.create_user(balance=10 * PRICE)
    bob = await api.create_user(balance=10 * PRICE)
    product = await api.create_product(PRICE, 5)
    bobs = await api.purchase(bob["token"], product["id"])
    assert bobs.status_code == 201
    return {"alice": alice, "bob": bob, "product": product, "bobs_purchase": bobs.json()}


def _is_problem(r: object, status: int, code: str) -> None:
    assert r.status_code == status, r.text  # type: ignore[attr-defined]
    assert r.headers["content-type"] == "application/problem+json"  # type: ignore[attr-defined]
    body = r.json()  # type: ignore[attr-defined]
    assert body["code"] == code and body["status"] == status
    assert body["title"] and body["detail"]


BAD_PURCHASE_BODIES = [
    {"quantity": 0}, {"quantity": -1}, {"quantity": 1.0}, {"quantity": 1.5},
    {"quantity": "1"}, {"quantity": True}, {"quantity": 10**30}, {"quantity": None},
    {"extra": "field"}, {"product_id": 7}, {"product_id": None},
]


async def test_malformed_purchases_are_422_and_change_nothing(
    api: ApiClient, world: dict[str, object],
) -> None:
    alice, product = world["alice"], world["product"]
    before = await _state(api, alice["token"], product["id"])  # type: ignore[index]
    for patch in BAD_PURCHASE_BODIES:
        body = {"product_id": product["id"], "quantity": 1, **patch}  # type: ignore[index]
        r = await api.http.post("/api/purchases", json=body,
                                headers=api.auth(alice["token"], str(uuid.uuid4())))  # type: ignore[index]
        _is_problem(r, 422, "VALIDATION_ERROR")
        assert r.json()["errors"] and {"loc", "msg"} <= set(r.json()["errors"][0]), patch
    for raw in (b"{", b"not json", b"[]", b""):
        r = await api.http.post("/api/purchases", content=raw, headers={
            **api.auth(alice["token"], str(uuid.uuid4())),  # type: ignore[index]
            "content-type": "application/json"})
        _is_problem(r, 422, "VALIDATION_ERROR")
    assert await _state(api, alice["token"], product["id"]) == before  # type: ignore[index]


async def test_bad_amounts_on_adjustments(api: ApiClient, world: dict[str, object]) -> None:
    alice, product = world["alice"], world["product"]
    before = await _state(api, alice["token"], product["id"])  # type: ignore[index]
    url = f"/api/admin/wallets/{alice['id']}/adjustments"  # type: ignore[index]
    for body in ({"amount": 0, "reason": "x"}, {"amount": 1.5, "reason": "x"},
                 {"amount": "100", "reason": "x"}, {"amount": 10**12, "reason": "x"},
                 {"amount": 100}, {"amount": 1, "set_balance": 5, "reason": "x"},
                 {"set_balance": -1, "reason": "x"}, {"amount": 1, "reason": "x", "z": 1}):
        r = await api.http.post(url, json=body, headers=api.auth(api.admin_token,
                                                                 str(uuid.uuid4())))
        _is_problem(r, 422, "VALIDATION_ERROR")
    r = await api.http.post(url, json={"amount": -10**6, "reason": "too much"},
                            headers=api.auth(api.admin_token, str(uuid.uuid4())))
    _is_problem(r, 400, "INSUFFICIENT_BALANCE")
    r = await api.http.post("/api/admin/wallets/usr_nobody/adjustments",
                            json={"amount": 5, "reason": "x"},
                            headers=api.auth(api.admin_token, str(uuid.uuid4())))
    _is_problem(r, 404, "NOT_FOUND")
    r = await api.http.post(url, json={"amount": 5, "reason": "x"},
                            headers=api.auth(api.admin_token))
    _is_problem(r, 400, "IDEMPOTENCY_KEY_MISSING")
    assert await _state(api, alice["token"], product["id"]) == before  # type: ignore[index]


async def test_ids_of_others_and_unknown_ids_are_404(
    api: ApiClient, world: dict[str, object],
) -> None:
    alice, bobs = world["alice"], world["bobs_purchase"]
    token = alice["token"]  # type: ignore[index]
    for path in (f"/api/purchases/{bobs['id']}", "/api/purchases/pur_unknown",  # type: ignore[index]
                 f"/api/receipts/{bobs['receipt_number']}", "/api/receipts/SC0",  # type: ignore[index]
                 "/api/products/prd_unknown", "/api/programs/prg_unknown"):
        _is_problem(await api.http.get(path, headers=api.auth(token)), 404, "NOT_FOUND")
    r = await api.purchase(token, "prd_unknown")
    _is_problem(r, 404, "NOT_FOUND")
    r = await api.http.post(f"/api/purchases/{bobs['id']}/cancel",  # type: ignore[index]
                            headers=api.auth(token))
    _is_problem(r, 404, "NOT_FOUND")


async def test_tokens(api: ApiClient, world: dict[str, object]) -> None:
    alice, product = world["alice"], world["product"]
    body = {"product_id": product["id"]}  # type: ignore[index]
    r = await api.http.post("/api/purchases", json=body)
    _is_problem(r, 401, "UNAUTHENTICATED")
    r = await api.http.post("/api/purchases", json=body,
                            headers={"Authorization": "Bearer nope", "Idempotency-Key": "k"})
    _is_problem(r, 401, "UNAUTHENTICATED")
    r = await api.http.get("/api/wallet", headers={"Authorization": "Basic abc"})
    _is_problem(r, 401, "UNAUTHENTICATED")
    for method, path in (("GET", "/api/admin/audit"), ("POST", "/api/admin/users"),
                         ("GET", "/api/admin/sequences")):
        r = await api.http.request(method, path, json={"email": "x@y.z"},
                                   headers=api.auth(alice["token"]))  # type: ignore[index]
        _is_problem(r, 403, "FORBIDDEN")
    dup = await api.http.post("/api/admin/users", json={"email": alice["email"]},  # type: ignore[index]
                              headers=api.auth(api.admin_token))
    _is_problem(dup, 409, "CONFLICT")
    sku = await api.http.post("/api/admin/products", json={
        "sku": product["sku"], "name": "x", "price": 1},  # type: ignore[index]
        headers=api.auth(api.admin_token))
    _is_problem(sku, 409, "CONFLICT")
    _is_problem(await api.http.get("/api/nothing-here"), 404, "NOT_FOUND")
