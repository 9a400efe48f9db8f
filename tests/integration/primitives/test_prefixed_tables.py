"""The public API against an application's own database: the primitives' tables created
with a prefix (no Alembic, no payguard service tables) beside the app's own ``users`` table,
then every primitive raced or exercised on them, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import Column, MetaData, String, Table, Text, inspect, select, text
from sqlalchemy.exc import IntegrityError

import payguard
from payguard import Database, UnitOfWork
from payguard.outbox.types import ClaimedMessage

PREFIX = "acme_"


@pytest.fixture
async def app_db(db_url: str) -> AsyncIterator[Database]:
    """An empty database holding only the application's own ``users`` table."""
    db = payguard.connect(db_url)
    async with db.engine.begin() as conn:
        await conn.execute(text("CREATE TABLE users (id VARCHAR(40) PRIMARY KEY, "
                                "balance_note TEXT)"))
    try:
        yield db
    finally:
        await db.dispose()


async def _table_names(db: Database) -> set[str]:
    async with db.engine.connect() as conn:
        return set(await conn.run_sync(lambda c: inspect(c).get_table_names()))


async def test_create_tables_makes_only_the_prefixed_primitives(app_db: Database) -> None:
    t = await payguard.create_tables(app_db, prefix=PREFIX)
    assert t is payguard.tables(PREFIX)
    names = await _table_names(app_db)
    assert names == {"users"} | {table.name for table in t.all()}
    assert all(name.startswith(PREFIX) for name in names - {"users"})
    # Idempotent: a second call creates nothing and fails on nothing.
    await payguard.create_tables(app_db, prefix=PREFIX)
    await payguard.drop_tables(app_db, prefix=PREFIX)
    assert await _table_names(app_db) == {"users"}


async def test_ledger_debits_race_exactly_on_prefixed_tables(app_db: Database) -> None:
    t = await payguard.create_tables(app_db, prefix=PREFIX)
    ledger = payguard.Ledger(t)

    async def setup(uow: UnitOfWork) -> None:
        await ledger.open_account(uow.conn, "funding", currency="EUR", kind="funding",
                                  allow_negative=True)
        await ledger.open_account(uow.conn, "alice", currency="EUR", owner_id="u1")
        await ledger.open_account(uow.conn, "shop", currency="EUR", kind="revenue")
        await ledger.transfer(uow.conn, debit="funding", credit="alice", amount=20,
                              currency="EUR", kind="topup")

    await app_db.transaction(setup)

    async def debit(_i: int) -> bool:
        async def tx(uow: UnitOfWork) -> None:
            await ledger.transfer(uow.conn, debit="alice", credit="shop", amount=1,
                                  currency="EUR", kind="purchase")
        try:
            await app_db.transaction(tx)
        except payguard.InsufficientBalance:
            return False
        return True

    results = await asyncio.gather(*(debit(i) for i in range(40)))
    assert sum(results) == 20
    async with app_db.read() as uow:
        assert await ledger.balance(uow.conn, "alice") == 0
        assert await ledger.balance(uow.conn, "shop") == 20
        assert await ledger.journal_total(uow.conn) == 0
        assert await ledger.journal_total(uow.conn, "alice") == 0

    async def wrong_currency(uow: UnitOfWork) -> None:
        await ledger.transfer(uow.conn, debit="funding", credit="alice", amount=1,
                              currency="USD", kind="topup")

    with pytest.raises(payguard.CurrencyMismatch):
        await app_db.transaction(wrong_currency)

    if app_db.dialect == "postgresql":
        # The deferred trigger was created with the prefixed entries table.
        async def unbalanced(uow: UnitOfWork) -> None:
            transfer_id = (await uow.conn.execute(select(t.transfers.c.id).limit(1))).scalar()
            await uow.conn.execute(t.entries.insert().values(
                transfer_id=transfer_id, account_id="shop", amount=5, balance_after=25,
                created_at=datetime.now(UTC)))

        with pytest.raises(IntegrityError, match="sum to 5, not 0"):
            await app_db.transaction(unbalanced)


async def test_sequences_and_counters_on_prefixed_tables(app_db: Database) -> None:
    t = await payguard.create_tables(app_db, prefix=PREFIX)
    numbers, seats = payguard.Sequences(t), payguard.Counters(t)
    await app_db.transaction(lambda uow: seats.create(uow.conn, "seats", 3))

    async def number(_i: int) -> int:
        return await app_db.transaction(lambda uow: numbers.next(uow.conn, "invoice", "2026"))

    async def seat(i: int) -> bool:
        return await app_db.transaction(lambda uow: seats.reserve(uow.conn, "seats", f"o{i}"))

    got = await asyncio.gather(*(number(i) for i in range(30)))
    assert sorted(got) == list(range(1, 31))
    won = await asyncio.gather(*(seat(i) for i in range(8)))
    assert sum(won) == 3
    winner = f"o{won.index(True)}"
    assert await app_db.transaction(lambda uow: seats.release(uow.conn, "seats", winner)) == 1
    assert await app_db.transaction(lambda uow: seats.release(uow.conn, "seats", winner)) == 0
    async with app_db.read() as uow:
        assert await numbers.peek(uow.conn, "invoice", "2026") == 30
        counter = await seats.get(uow.conn, "seats")
        assert counter is not None and (counter.limit, counter.taken) == (3, 2)


async def test_guard_claims_once_and_replays_on_prefixed_tables(app_db: Database) -> None:
    t = await payguard.create_tables(app_db, prefix=PREFIX)
    guard = payguard.IdempotencyGuard(app_db, ttl=3600, lock_timeout=30,
                                      render_error=payguard.problem_details, tables=t)
    runs = 0

    async def effects(_uow: UnitOfWork, _claim: payguard.Claim) -> payguard.StoredResponse:
        nonlocal runs
        runs += 1
        await asyncio.sleep(0.05)
        return payguard.json_response({"charged": 5}, status=201)

    async def call() -> str:
        try:
            outcome = await guard.execute(principal="u1", key="k1", method="POST",
                                          path="/charge", body=b'{"a":5}', effects=effects)
        except payguard.RequestInProgress:
            return "in_progress"
        return "replay" if outcome.replayed else "first"

    results = await asyncio.gather(*(call() for _ in range(10)))
    assert results.count("first") == 1 and runs == 1
    assert await call() == "replay"
    with pytest.raises(payguard.IdempotencyKeyReused):
        await guard.execute(principal="u1", key="k1", method="POST", path="/charge",
                            body=b'{"a":6}', effects=effects)
    async with app_db.read() as uow:
        rows = (await uow.conn.execute(select(t.idempotency_keys.c.state))).scalars().all()
    assert rows == ["completed"]


async def test_sql_locks_fences_inbox_and_outbox_on_prefixed_tables(app_db: Database) -> None:
    t = await payguard.create_tables(app_db, prefix=PREFIX)
    locks = payguard.lock_service(app_db, "sql", tables=t)
    async with locks.hold("order:1", ttl=5, wait=0) as first:
        with pytest.raises(payguard.LockTimeout):
            await locks.acquire("order:1", ttl=5, wait=0)
    async with locks.hold("order:1", ttl=5, wait=0) as second:
        assert second.fencing_token > first.fencing_token
    await app_db.transaction(
        lambda uow: payguard.Fence("order:1", second.fencing_token, t).check(uow.conn))
    with pytest.raises(payguard.StaleFencingToken):
        await app_db.transaction(
            lambda uow: payguard.Fence("order:1", first.fencing_token, t).check(uow.conn))

    local = payguard.lock_service(app_db, "local", tables=t)
    async with local.hold("x", ttl=5, wait=0) as lease:
        assert lease.fencing_token >> 32 == 1  # the first epoch, from acme_lock_epochs
    async with app_db.read() as uow:
        assert await uow.conn.scalar(select(t.lock_epochs.c.epoch)) == 1

    box = payguard.Inbox(t)
    first_time = await app_db.transaction(
        lambda uow: box.record(uow.conn, source="psp", event_id="ev1", type="paid"))
    again = await app_db.transaction(
        lambda uow: box.record(uow.conn, source="psp", event_id="ev1", type="paid"))
    assert (first_time, again) == (True, False)

    delivered: list[ClaimedMessage] = []

    class Collect:
        name = "collect"

        async def deliver(self, message: ClaimedMessage) -> None:
            delivered.append(message)

    out = payguard.Outbox(t)
    for _ in range(2):
        await app_db.transaction(lambda uow: out.enqueue(
            uow.conn, dedupe_key="receipt:1", kind="receipt", recipient="a@example.com",
            subject="Receipt", body="Thanks"))
    result = await out.dispatcher(app_db, Collect()).run_once()
    assert result["sent"] == 1 and [m.dedupe_key for m in delivered] == ["receipt:1"]
    async with app_db.read() as uow:
        assert await out.count_pending(uow.conn) == 0


async def test_two_prefixes_share_one_database_without_touching_each_other(
        app_db: Database) -> None:
    a = await payguard.create_tables(app_db, prefix="a_")
    b = await payguard.create_tables(app_db, prefix="b_")
    await app_db.transaction(lambda uow: payguard.Sequences(a).next(uow.conn, "n"))
    await app_db.transaction(lambda uow: payguard.Sequences(a).next(uow.conn, "n"))
    async with app_db.read() as uow:
        assert await payguard.Sequences(a).peek(uow.conn, "n") == 2
        assert await payguard.Sequences(b).peek(uow.conn, "n") == 0


def test_prefixes_are_validated() -> None:
    for bad in ("Acme", "1x", "a-b", "x" * 21, "a b", 'a"', "pg_", "pg_shop_"):
        with pytest.raises(ValueError):
            payguard.tables(bad)


async def test_alembic_autogenerate_sees_the_bundle_beside_the_apps_tables(
        app_db: Database) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    t = payguard.tables(PREFIX)
    # The app's env.py: target_metadata = [app_metadata, payguard.tables(PREFIX).metadata]
    app_metadata = MetaData()
    Table("users", app_metadata, Column("id", String(40), primary_key=True),
          Column("balance_note", Text))

    def diff(sync_conn: Any) -> list[Any]:
        context = MigrationContext.configure(sync_conn)
        return list(compare_metadata(context, [app_metadata, t.metadata]))  # type: ignore[arg-type]

    async with app_db.engine.connect() as conn:
        before = await conn.run_sync(diff)
    # What `alembic revision --autogenerate` would write: each prefixed table, nothing else.
    added = {op[1].name for op in before if op[0] == "add_table"}
    assert added == {table.name for table in t.all()}
    assert not [op for op in before if op[0] == "remove_table"]

    await payguard.create_tables(app_db, prefix=PREFIX)
    async with app_db.engine.connect() as conn:
        after = await conn.run_sync(diff)
    assert [op for op in after if op[0] in ("add_table", "add_index", "add_column")] == []
