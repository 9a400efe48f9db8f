"""PostgreSQL transaction-scoped advisory locks."""

from __future__ import annotations

import asyncio

from payguard.locks.advisory import advisory_xact_lock, try_advisory_xact_lock
from payguard.store.uow import Database
from tests.integration.locks.conftest import migrated
from tests.support.db import committed


async def test_advisory_lock_excludes_until_commit(pg_url: str) -> None:
    database: Database = await migrated(pg_url)
    try:
        order: list[str] = []
        first_in = asyncio.Event()
        release_first = asyncio.Event()

        async def first() -> None:
            async with committed(database) as uow:
                await advisory_xact_lock(uow.conn, "section")
                order.append("first in")
                first_in.set()
                await release_first.wait()
                order.append("first out")

        async def second() -> None:
            await first_in.wait()
            async with committed(database) as uow:
                assert not await try_advisory_xact_lock(uow.conn, "section")
                assert await try_advisory_xact_lock(uow.conn, "another section")
            async with committed(database) as uow:
                await advisory_xact_lock(uow.conn, "section")  # blocks until first commits
                order.append("second in")

        tasks = [asyncio.create_task(first()), asyncio.create_task(second())]
        await first_in.wait()
        await asyncio.sleep(0.2)
        release_first.set()
        await asyncio.gather(*tasks)
        assert order == ["first in", "first out", "second in"]
        async with committed(database) as uow:  # released by the commits
            assert await try_advisory_xact_lock(uow.conn, "section")
    finally:
        await database.dispose()
