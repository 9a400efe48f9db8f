from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from sqlalchemy.ext.asyncio import create_async_engine

from payguard.config import Settings
from payguard.outbox import MailboxTransport, OutboxDispatcher, SmtpTransport
from payguard.store.uow import Database


class _MoreSettings(Settings):
    outbox_max_attempts: int = 3


@pytest.fixture
async def db() -> AsyncIterator[Database]:
    # Never connected to: these tests only check construction.
    database = Database(create_async_engine("sqlite+aiosqlite:///unused.db"))
    yield database
    await database.dispose()


async def test_transport_follows_smtp_url(db: Database) -> None:
    assert isinstance(OutboxDispatcher(db, Settings()).transport, MailboxTransport)
    d = OutboxDispatcher(db, Settings(smtp_url="smtp://u:p@127.0.0.1:2525",
                                      mail_from="shop@example.com"))
    assert isinstance(d.transport, SmtpTransport)
    assert d.transport.target.port == 2525 and d.transport.mail_from == "shop@example.com"


async def test_max_attempts_from_settings_when_present(db: Database) -> None:
    assert OutboxDispatcher(db, Settings()).max_attempts == 10
    assert OutboxDispatcher(db, _MoreSettings()).max_attempts == 3
    assert OutboxDispatcher(db, _MoreSettings(), max_attempts=5).max_attempts == 5


async def test_lease_must_outlast_a_send(db: Database) -> None:
    with pytest.raises(ValueError):
        OutboxDispatcher(db, Settings(), lease=10, send_timeout=10)
