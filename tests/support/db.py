"""Transaction blocks for tests that need one open across several steps.

Application code runs its writes through ``Database.transaction(fn)`` (which replays ``fn``
on conflicts); a test that drives a transaction step by step (hold a lock, then check what
a second connection sees) needs a plain block instead. ``committed`` commits when the block
ends normally; ``uncommitted`` never commits, to show what a rollback leaves behind.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from payguard.store.uow import Database, UnitOfWork

__all__ = ["committed", "uncommitted"]


@asynccontextmanager
async def committed(db: Database) -> AsyncIterator[UnitOfWork]:
    async with db.engine.connect() as conn:
        await conn.begin()
        yield UnitOfWork(conn)
        await conn.commit()


@asynccontextmanager
async def uncommitted(db: Database) -> AsyncIterator[UnitOfWork]:
    async with db.engine.connect() as conn:
        await conn.begin()
        yield UnitOfWork(conn)
        await conn.rollback()
