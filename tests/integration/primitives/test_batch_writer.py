"""The group-commit writer on SQLite and PostgreSQL: batches form under load, a poison
command fails alone, retryable errors are retried, a full queue answers OVERLOADED, a
caller that goes away does not cancel its command, the same key twice in flight is 409.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.exc import OperationalError

from payguard.api.deps import json_response
from payguard.api.problems import render_error
from payguard.config import Settings, to_async_url
from payguard.errors import Overloaded, RequestInProgress
from payguard.idempotency import Outcome
from payguard.service import batch_writer as writer_module
from payguard.service.batch_writer import BatchWriter
from payguard.service.wallet_batch import WalletAdjustment, WalletCommand, WalletPurchase
from payguard.store.engine import create_engine
from payguard.store.migrate import migrate
from payguard.store.schema import idempotency_keys, purchases
from payguard.store.uow import Database
from tests.integration.primitives.test_batch import PRICE, _audit, _product, _user


def _writer(db: Database, **settings: Any) -> BatchWriter:
    return BatchWriter(db, Settings(**settings), render_ok=json_response,
                       render_error=render_error)


async def _submit(writer: BatchWriter, command: WalletCommand, key: str | None = None,
                  principal: str = "usr_x") -> Outcome:
    return await writer.submit(principal=principal, key=key or str(uuid.uuid4()),
                               method="POST", path="/api/purchases",
                               body=json.dumps(str(command)).encode(), command=command)


async def test_concurrent_commands_are_batched_and_each_gets_its_answer(
    database: Database,
) -> None:
    user = await _user(database, 30 * PRICE)
    product = await _product(database, 100)
    writer = _writer(database)
    try:
        outcomes = await asyncio.gather(*(
            _submit(writer, WalletPurchase(user, product, 1)) for _ in range(50)))
    finally:
        await writer.close()
    statuses = [o.response.status for o in outcomes]
    assert statuses.count(201) == 30 and statuses.count(400) == 20
    assert writer.stats.commands == 50 and writer.stats.batches < 50
    receipts = sorted(int(json.loads(o.response.body)["receipt_number"][-6:])
                      for o in outcomes if o.response.status == 201)
    assert receipts == list(range(1, 31))
    await _audit(database)


async def test_a_poison_command_fails_alone(database: Database) -> None:
    user = await _user(database, 10 * PRICE)
    product = await _product(database, 10)
    writer = _writer(database, max_amount=2**80)
    # 2**70 minor units cannot be stored in a BIGINT: a real database/driver error.
    poison = WalletAdjustment(user, "USD", 2**70, None, "poison")
    poison_key = "poison-key"
    try:
        results = await asyncio.gather(
            *(_submit(writer, WalletPurchase(user, product, 1), principal=user)
              for _ in range(4)),
            _submit(writer, poison, poison_key, principal="admin"),
            *(_submit(writer, WalletPurchase(user, product, 1), principal=user)
              for _ in range(4)),
            return_exceptions=True)
    finally:
        await writer.close()
    assert [isinstance(r, Outcome) and r.response.status == 201 for r in results] == (
        [True] * 4 + [False] + [True] * 4)
    assert not isinstance(results[4], Outcome | RequestInProgress)
    async with database.read() as uow:
        assert await uow.conn.scalar(select(func.count()).select_from(purchases)) == 8
        # The failed command's key was rolled back with it: free for a retry.
        assert await uow.conn.scalar(select(func.count()).select_from(idempotency_keys)
                                     .where(idempotency_keys.c.key == poison_key)) == 0
    await _audit(database)


async def test_retryable_errors_are_retried(database: Database,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    user = await _user(database, 10 * PRICE)
    product = await _product(database, 10)
    real = writer_module.apply_wallet_commands
    failures = [2]

    async def flaky(*args: Any, **kwargs: Any) -> Any:
        if failures[0]:
            failures[0] -= 1
            raise OperationalError("UPDATE accounts", {}, Exception("database is locked"))
        return await real(*args, **kwargs)

    monkeypatch.setattr(writer_module, "apply_wallet_commands", flaky)
    writer = _writer(database)
    try:
        outcome = await _submit(writer, WalletPurchase(user, product, 1))
    finally:
        await writer.close()
    assert outcome.response.status == 201 and failures == [0]
    assert writer.stats.splits == 0


async def test_full_queue_overloaded_disconnect_and_same_key_in_flight(
    database: Database,
) -> None:
    user = await _user(database, 10 * PRICE)
    product = await _product(database, 10)
    # Every batch stays open 0.5 s; the queue holds 2 commands.
    writer = _writer(database, batch_queue=2, test_hold_seconds=0.5)
    buy = WalletPurchase(user, product, 1)
    try:
        first = asyncio.create_task(_submit(writer, buy, "k-first"))
        await asyncio.sleep(0.2)  # taken into the open batch
        gone = asyncio.create_task(_submit(writer, buy, "k-gone"))
        queued = asyncio.create_task(_submit(writer, buy, "k-queued"))
        await asyncio.sleep(0)
        with pytest.raises(Overloaded) as full:
            await _submit(writer, buy, "k-refused")
        assert full.value.retry_after == 1
        with pytest.raises(RequestInProgress):
            await _submit(writer, buy, "k-first")
        gone.cancel()  # the client went away: its command still commits
        assert (await first).response.status == 201
        assert (await queued).response.status == 201
        replay = await _submit(writer, buy, "k-first")
        assert replay.replayed and replay.response.body == (await first).response.body
        gone_again = await _submit(writer, buy, "k-gone")
        assert gone_again.replayed and gone_again.response.status == 201
    finally:
        await writer.close()
    async with database.read() as uow:
        assert await uow.conn.scalar(select(func.count()).select_from(purchases)) == 3
    await _audit(database)


async def test_a_dead_connection_without_pre_ping_is_replayed_not_failed(pg_url: str) -> None:
    """The writer's pool skips the pre-ping (bootstrap): a batch that meets a connection
    the server has dropped must be replayed on a fresh one, never answered 500.
    (PostgreSQL only: SQLite has no server to drop a connection.)"""
    url = to_async_url(pg_url)
    await migrate(url)
    database = Database(create_engine(url))
    db = Database(create_engine(url, pre_ping=False))
    writer = _writer(db)
    try:
        user = await _user(database, 10 * PRICE)
        product = await _product(database, 10)
        first = await _submit(writer, WalletPurchase(user, product, 1), principal=user)
        assert first.response.status == 201
        # Drop every other connection to this database: the writer's pooled one too.
        async with database.read() as uow:
            killed = (await uow.conn.execute(text(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"))).scalar()
        assert killed and killed >= 1
        again = await asyncio.gather(*(
            _submit(writer, WalletPurchase(user, product, 1), principal=user)
            for _ in range(3)))
        assert [o.response.status for o in again] == [201] * 3
        await _audit(database)
    finally:
        await writer.close()
        await db.dispose()
        await database.dispose()
