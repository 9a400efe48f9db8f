"""Ledger rules enforced by the database itself, not only by Python: a transfer between
accounts of different currencies is refused in the balance update, and (PostgreSQL) a
journal whose entries do not sum to zero per transfer is refused at commit."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.exc import IntegrityError

from payguard import ledger
from payguard.clock import utcnow
from payguard.ledger import CurrencyMismatch
from payguard.store.schema import accounts, entries, transfers, users
from payguard.store.uow import Database, UnitOfWork


async def _accounts(db: Database) -> dict[str, str]:
    async def tx(uow: UnitOfWork) -> dict[str, str]:
        await uow.conn.execute(users.insert().values(
            id="usr_t", email="t@t.test", token_hash="x" * 64, created_at=utcnow()))
        usd = await ledger.ensure_wallet(uow.conn, "usr_t", "USD")
        funding = await ledger.ensure_platform_account(uow.conn, "funding", "USD")
        eur = await ledger.ensure_platform_account(uow.conn, "revenue", "EUR")
        await ledger.transfer(uow.conn, debit=funding, credit=usd, amount=1_000,
                              currency="USD", kind="adjustment")
        return {"usd_wallet": usd, "usd_funding": funding, "eur_revenue": eur}
    return await db.transaction(tx)


async def _balances(db: Database) -> dict[str, int]:
    async with db.read() as uow:
        rows = await uow.conn.execute(select(accounts.c.id, accounts.c.balance))
        return {r.id: int(r.balance) for r in rows}


async def test_a_transfer_between_currencies_is_refused(database: Database) -> None:
    acc = await _accounts(database)
    before = await _balances(database)
    for currency in ("USD", "EUR"):  # whichever currency the transfer claims
        with pytest.raises(CurrencyMismatch):
            await database.transaction(lambda uow, c=currency: ledger.transfer(  # type: ignore[misc]
                uow.conn, debit=acc["usd_wallet"], credit=acc["eur_revenue"], amount=100,
                currency=c, kind="purchase"))
    # Both accounts in USD but the transfer says EUR: refused too.
    with pytest.raises(CurrencyMismatch):
        await database.transaction(lambda uow: ledger.transfer(
            uow.conn, debit=acc["usd_wallet"], credit=acc["usd_funding"], amount=100,
            currency="EUR", kind="adjustment"))
    assert await _balances(database) == before
    async with database.read() as uow:
        assert await uow.conn.scalar(select(func.count()).select_from(transfers)) == 1


async def test_an_unbalanced_journal_is_refused_at_commit(pg_url: str) -> None:
    from payguard.config import to_async_url
    from payguard.store.engine import create_engine
    from payguard.store.migrate import migrate

    url = to_async_url(pg_url)
    await migrate(url)
    database = Database(create_engine(url))
    try:
        acc = await _accounts(database)

        def journal(*amounts: int):  # type: ignore[no-untyped-def]
            """A hand-written transfer with one entry per amount, bypassing ledger.transfer."""
            async def tx(uow: UnitOfWork) -> None:
                await uow.conn.execute(text(
                    "INSERT INTO transfers (id, kind, amount, currency, debit_account_id,"
                    " credit_account_id, created_at) VALUES ('trf_hand', 'adjustment', 100,"
                    " 'USD', :d, :c, now())"), {"d": acc["usd_funding"], "c": acc["usd_wallet"]})
                for amount, account in zip(amounts, (acc["usd_funding"], acc["usd_wallet"]),
                                           strict=False):
                    await uow.conn.execute(text(
                        "INSERT INTO entries (transfer_id, account_id, amount, balance_after,"
                        " created_at) VALUES ('trf_hand', :a, :m, 0, now())"),
                        {"a": account, "m": amount})
            return tx

        for unbalanced in ((100,), (-100, 90)):
            # Each statement is accepted; the deferred constraint trigger refuses the commit.
            with pytest.raises(IntegrityError, match="sum"):
                await database.transaction(journal(*unbalanced))
        async with database.read() as uow:
            assert await uow.conn.scalar(select(func.count()).select_from(entries).where(
                entries.c.transfer_id == "trf_hand")) == 0
        await database.transaction(journal(-100, 100))  # balanced: accepted
    finally:
        await database.dispose()
