"""The wallet ledger under concurrent debits, next to the naive read-modify-write it replaces.

The naive version must lose money under the same race: that is the proof that this test
setup can fail at all.
"""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import func, select, text, update

from payguard import ledger
from payguard.errors import InsufficientBalance
from payguard.store.schema import accounts, entries
from payguard.store.uow import Database, UnitOfWork
from tests.support.db import uncommitted

PRICE = 300


async def _funded_wallet(db: Database, amount: int) -> tuple[str, str]:
    async def tx(uow: UnitOfWork) -> tuple[str, str]:
        from payguard.store.schema import users

        await uow.conn.execute(users.insert().values(
            id="usr_t", email="t@t.test", token_hash="x" * 64, created_at=func.now()))
        wallet = await ledger.ensure_wallet(uow.conn, "usr_t", "USD")
        funding = await ledger.ensure_platform_account(uow.conn, "funding", "USD")
        await ledger.ensure_platform_account(uow.conn, "revenue", "USD")
        await ledger.transfer(uow.conn, debit=funding, credit=wallet, amount=amount,
                              currency="USD", kind="adjustment")
        return wallet, ledger.platform_account_id("revenue", "USD")

    return await db.transaction(tx)


async def test_concurrent_debits_never_overdraw(database: Database) -> None:
    wallet, revenue = await _funded_wallet(database, 10 * PRICE)

    async def buy() -> bool:
        async def tx(uow: UnitOfWork) -> bool:
            try:
                await ledger.transfer(uow.conn, debit=wallet, credit=revenue, amount=PRICE,
                                      currency="USD", kind="purchase")
            except InsufficientBalance:
                return False
            return True

        return await database.transaction(tx)

    results = await asyncio.gather(*(buy() for _ in range(40)))
    assert results.count(True) == 10
    async with database.read() as uow:
        balance = await uow.conn.scalar(select(accounts.c.balance).where(accounts.c.id == wallet))
        journal = await uow.conn.scalar(
            select(func.sum(entries.c.amount)).where(entries.c.account_id == wallet))
        revenue_balance = await uow.conn.scalar(
            select(accounts.c.balance).where(accounts.c.id == revenue))
    assert balance == 0 and journal == 0
    assert revenue_balance == 10 * PRICE


async def test_the_database_refuses_a_negative_wallet_even_without_the_guard(
    database: Database,
) -> None:
    wallet, _ = await _funded_wallet(database, 100)
    with pytest.raises(Exception, match=r"(?i)check"):
        async with uncommitted(database) as uow:
            await uow.conn.execute(
                update(accounts).where(accounts.c.id == wallet).values(balance=-1))


async def test_naive_read_modify_write_loses_money_under_the_same_race(
    database: Database,
) -> None:
    """What payguard replaces: SELECT balance, check, UPDATE balance = :computed."""
    wallet, _ = await _funded_wallet(database, 10 * PRICE)
    sold = 0

    async def naive_buy() -> None:
        nonlocal sold
        # Autocommit-style statements, as the naive code used them: read, check, write.
        async with database.engine.connect() as conn:
            await conn.execution_options(sqlite_begin="DEFERRED")
            balance = await conn.scalar(text("SELECT balance FROM accounts WHERE id = :id"),
                                        {"id": wallet})
            await conn.commit()
            await asyncio.sleep(0.01)  # the request does other work between read and write
            if balance >= PRICE:
                await conn.execute(text("UPDATE accounts SET balance = :b WHERE id = :id"),
                                   {"b": balance - PRICE, "id": wallet})
                await conn.commit()
                sold += 1

    await asyncio.gather(*(naive_buy() for _ in range(40)))
    async with database.read() as uow:
        balance = await uow.conn.scalar(select(accounts.c.balance).where(accounts.c.id == wallet))
    # Money was lost: more goods were sold than the balance that actually went down pays for.
    assert sold * PRICE > 10 * PRICE - balance
