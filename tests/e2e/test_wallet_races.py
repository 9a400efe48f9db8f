"""The foundation's races, through real HTTP against a live server, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import re
from collections import Counter

from tests.support.api import ApiClient, outcome_counts

PRICE = 700


async def test_200_concurrent_purchases_on_a_wallet_holding_50(api: ApiClient) -> None:
    user = await api.create_user(balance=50 * PRICE)
    product = await api.create_product(PRICE, 200)
    responses = await asyncio.gather(
        *(api.purchase(user["token"], product["id"]) for _ in range(200))
    )
    assert outcome_counts(responses) == {(201, None): 50, (400, "INSUFFICIENT_BALANCE"): 150}
    assert await api.balance(user["token"]) == 0
    items = [i for r in responses if r.status_code == 201 for i in r.json()["items"]]
    assert len(items) == len(set(items)) == 50
    r = await api.http.get(f"/api/products/{product['id']}", headers=api.auth(user["token"]))
    assert r.json()["stock"] == 150
    audit = await api.audit()
    assert audit["ok"], audit["problems"]


async def test_300_concurrent_purchases_by_30_users_get_one_contiguous_receipt_range(
    api: ApiClient,
) -> None:
    product = await api.create_product(100, 300)
    users = await asyncio.gather(*(api.create_user(balance=1000) for _ in range(30)))
    responses = await asyncio.gather(
        *(api.purchase(u["token"], product["id"]) for u in users for _ in range(10))
    )
    assert outcome_counts(responses) == {(201, None): 300}
    numbers = [r.json()["receipt_number"] for r in responses]
    assert all(re.fullmatch(r"SC\d{4}\d{6}", n) for n in numbers)
    seqs = sorted(int(n[-6:]) for n in numbers)
    assert seqs == list(range(seqs[0], seqs[0] + 300))
    orders = {r.json()["order_number"] for r in responses}
    assert len(orders) == 300
    for u in users:
        assert await api.balance(u["token"]) == 0
    audit = await api.audit()
    assert audit["ok"], audit["problems"]


async def test_50_buyers_race_for_20_items(api: ApiClient) -> None:
    product = await api.create_product(PRICE, 20)
    users = await asyncio.gather(*(api.create_user(balance=PRICE) for _ in range(50)))
    responses = await asyncio.gather(*(api.purchase(u["token"], product["id"]) for u in users))
    assert outcome_counts(responses) == {(201, None): 20, (409, "OUT_OF_STOCK"): 30}
    delivered = [i for r in responses if r.status_code == 201 for i in r.json()["items"]]
    assert sorted(delivered) == sorted(f"{product['sku']}-item-{i}" for i in range(20))
    balances = await asyncio.gather(*(api.balance(u["token"]) for u in users))
    assert Counter(balances) == {0: 20, PRICE: 30}
    audit = await api.audit()
    assert audit["ok"], audit["problems"]


async def test_quantity_purchase_fails_whole_when_stock_is_short(api: ApiClient) -> None:
    product = await api.create_product(PRICE, 3)
    user = await api.create_user(balance=10 * PRICE)
    r = await api.purchase(user["token"], product["id"], 4)
    assert (r.status_code, r.json()["code"]) == (409, "OUT_OF_STOCK")
    assert await api.balance(user["token"]) == 10 * PRICE
    r = await api.purchase(user["token"], product["id"], 3)
    assert r.status_code == 201 and len(r.json()["items"]) == 3
    assert await api.balance(user["token"]) == 7 * PRICE
