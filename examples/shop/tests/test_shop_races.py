"""The shop raced over real HTTP against real uvicorn servers, on SQLite and PostgreSQL;
every outcome is checked in the database, not only in the answers."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import httpx
from sqlalchemy import func, select

import payguard
from shop.models import invoices, tickets

T = TypeVar("T")
StartShop = Callable[[str], Any]  # conftest's start_shop: a server with .url
PG_TABLES = payguard.tables("payguard_")


def run(coro: Awaitable[T]) -> T:
    return asyncio.run(coro)  # type: ignore[arg-type]


def http(base_url: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=base_url, timeout=120,
                             limits=httpx.Limits(max_connections=300))


async def sign_up(client: httpx.AsyncClient, name: str, balance: int) -> dict[str, str]:
    answer = await client.post("/users", json={"name": name, "balance": balance})
    assert answer.status_code == 201, answer.text
    return {"Authorization": f"Bearer {answer.json()['token']}"}


async def query(database_url: str, stmt: Any) -> list[Any]:
    db = payguard.connect(database_url)
    try:
        async with db.read() as uow:
            return list((await uow.conn.execute(stmt)).all())
    finally:
        await db.dispose()


def test_50_concurrent_charges_with_one_key_charge_once(database_url: str,
                                                        start_shop: StartShop) -> None:
    server = start_shop(database_url)

    async def scenario() -> list[httpx.Response]:
        async with http(server.url) as client:
            auth = await sign_up(client, "ada", 1000)
            headers = {**auth, "Idempotency-Key": "charge-" + uuid.uuid4().hex}
            answers = await asyncio.gather(*(
                client.post("/charges", json={"amount": 70}, headers=headers)
                for _ in range(50)))
            balance = (await client.get("/balance", headers=auth)).json()["balance"]
            assert balance == 930
            return answers

    answers = run(scenario())
    firsts = [a for a in answers if a.status_code == 201
              and "idempotent-replayed" not in a.headers]
    replays = [a for a in answers if a.headers.get("idempotent-replayed") == "true"]
    in_flight = [a for a in answers if a.status_code == 409]
    assert len(firsts) == 1
    assert len(replays) + len(in_flight) == 49
    assert all(r.status_code == 201 and r.content == firsts[0].content for r in replays)
    assert all(r.json()["code"] == "REQUEST_IN_PROGRESS" for r in in_flight)
    # Exactly one charge in the database: one invoice, one charge transfer, one key.
    assert run(query(database_url, select(invoices.c.number, invoices.c.amount))) == [(1, 70)]
    t = PG_TABLES
    charges = run(query(database_url, select(func.count()).select_from(t.transfers)
                        .where(t.transfers.c.kind == "charge")))
    assert charges == [(1,)]
    keys = run(query(database_url, select(t.idempotency_keys.c.state)))
    assert keys == [("completed",)]


def test_200_concurrent_debits_of_1_on_a_balance_of_50(database_url: str,
                                                       start_shop: StartShop) -> None:
    server = start_shop(database_url)

    async def scenario() -> tuple[list[httpx.Response], int]:
        async with http(server.url) as client:
            auth = await sign_up(client, "bob", 50)
            answers = await asyncio.gather(*(
                client.post("/charges", json={"amount": 1},
                            headers={**auth, "Idempotency-Key": f"debit-{i}"})
                for i in range(200)))
            balance = (await client.get("/balance", headers=auth)).json()["balance"]
            return answers, balance

    answers, balance = run(scenario())
    statuses = Counter(a.status_code for a in answers)
    assert statuses == {201: 50, 400: 150}
    assert {a.json()["code"] for a in answers if a.status_code == 400} \
        == {"INSUFFICIENT_BALANCE"}
    assert balance == 0
    t = PG_TABLES
    (wallet,) = run(query(database_url, select(t.accounts.c.id, t.accounts.c.balance)
                          .where(t.accounts.c.kind == "account")))
    assert wallet[1] == 0
    # The journal: every transfer's two entries sum to zero, so the whole journal does, and
    # the wallet's own entries (opening +50, fifty -1) sum to its balance.
    assert run(query(database_url, select(func.sum(t.entries.c.amount)))) == [(0,)]
    assert run(query(database_url, select(func.sum(t.entries.c.amount))
                     .where(t.entries.c.account_id == wallet[0]))) == [(0,)]
    unbalanced = run(query(database_url, select(t.entries.c.transfer_id)
                           .group_by(t.entries.c.transfer_id)
                           .having(func.sum(t.entries.c.amount) != 0)))
    assert unbalanced == []
    numbers = run(query(database_url, select(invoices.c.number).order_by(invoices.c.number)))
    assert [n for (n,) in numbers] == list(range(1, 51))


def test_300_invoices_across_two_processes_are_gapless(database_url: str,
                                                       start_shop: StartShop) -> None:
    first, second = start_shop(database_url), start_shop(database_url)

    async def scenario() -> list[httpx.Response]:
        async with http(first.url) as one, http(second.url) as two:
            users = [await sign_up(one, f"user{i}", 100) for i in range(3)]
            return await asyncio.gather(*(
                (one if i % 2 else two).post(
                    "/charges", json={"amount": 1},
                    headers={**users[i % 3], "Idempotency-Key": f"inv-{i}"})
                for i in range(300)))

    answers = run(scenario())
    assert Counter(a.status_code for a in answers) == {201: 300}
    assert sorted(a.json()["invoice"] for a in answers) == list(range(1, 301))
    numbers = run(query(database_url, select(invoices.c.number).order_by(invoices.c.number)))
    assert [n for (n,) in numbers] == list(range(1, 301))
    t = PG_TABLES
    assert run(query(database_url, select(t.sequences.c.last_value))) == [(300,)]


def test_a_seat_limit_of_10_holds_against_15_concurrent_buyers(database_url: str,
                                                               start_shop: StartShop) -> None:
    server = start_shop(database_url)

    async def scenario() -> tuple[str, list[httpx.Response]]:
        async with http(server.url) as client:
            buyers = [await sign_up(client, f"fan{i}", 0) for i in range(15)]
            event = await client.post("/events", json={"name": "gig", "seats": 10},
                                      headers=buyers[0])
            event_id = event.json()["id"]
            return event_id, await asyncio.gather(*(
                client.post(f"/events/{event_id}/tickets",
                            headers={**who, "Idempotency-Key": "ticket"})
                for who in buyers))

    event_id, answers = run(scenario())
    assert Counter(a.status_code for a in answers) == {201: 10, 409: 5}
    assert {a.json()["code"] for a in answers if a.status_code == 409} == {"SOLD_OUT"}
    sold = run(query(database_url, select(func.count()).select_from(tickets)
                     .where(tickets.c.event_id == event_id)))
    assert sold == [(10,)]
    t = PG_TABLES
    counter = run(query(database_url, select(t.capacities.c.limit, t.capacities.c.taken)))
    assert counter == [(10, 10)]


def test_seat_additions_under_the_event_lock_all_count(database_url: str,
                                                       start_shop: StartShop) -> None:
    server = start_shop(database_url)

    async def scenario() -> list[httpx.Response]:
        async with http(server.url) as client:
            auth = await sign_up(client, "organiser", 0)
            event = await client.post("/events", json={"name": "talk", "seats": 0},
                                      headers=auth)
            event_id = event.json()["id"]
            return await asyncio.gather(*(
                client.post(f"/events/{event_id}/seats", json={"seats": 2}, headers=auth)
                for _ in range(12)))

    answers = run(scenario())
    assert [a.status_code for a in answers] == [200] * 12
    assert sorted(a.json()["seats"] for a in answers) == list(range(2, 25, 2))
    tokens = [a.json()["fencing_token"] for a in answers]
    assert len(set(tokens)) == 12
    t = PG_TABLES
    assert run(query(database_url, select(t.capacities.c.limit))) == [(24,)]
