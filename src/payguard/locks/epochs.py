"""Fencing epochs: fencing tokens that keep growing across restarts of their backend.

A backend's own counter restarts when its state is lost: a local backend's in a new
process, Redis's when Redis restarts without persistence. A token minted afterwards would be
*smaller* than one a paused holder still carries, and the fence would accept the paused
holder's late write. So the token is ``(epoch << 32) | counter``, where the epoch comes from
the database (``lock_epochs``, a counter that only grows and is durable) and is taken anew
each time the backend's state starts from nothing. Every token of a later epoch is larger
than every token of an earlier one.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from payguard.clock import utcnow
from payguard.store import dialect
from payguard.store.schema import PRIMITIVES
from payguard.store.tables import Tables
from payguard.store.uow import Database, UnitOfWork

__all__ = ["EPOCH_SHIFT", "EpochSource", "compose", "epoch_source", "next_epoch"]

#: Bits of the backend's own counter: 4 billion acquisitions of one key per epoch.
EPOCH_SHIFT = 32

EpochSource = Callable[[], Awaitable[int]]


def compose(epoch: int, counter: int) -> int:
    if not 0 <= counter < 1 << EPOCH_SHIFT:
        raise ValueError(f"fencing counter {counter} out of range for one epoch")
    return (epoch << EPOCH_SHIFT) | counter


async def next_epoch(db: Database, scope: str, *, tables: Tables = PRIMITIVES) -> int:
    """Take the next epoch of ``scope`` (1, 2, 3, ...) in its own committed transaction."""
    lock_epochs = tables.lock_epochs

    async def tx(uow: UnitOfWork) -> int:
        now = utcnow()
        ins = dialect.insert(uow.conn, lock_epochs).values(scope=scope, epoch=1, updated_at=now)
        epoch = (await uow.conn.execute(
            ins.on_conflict_do_update(
                index_elements=[lock_epochs.c.scope],
                set_={"epoch": lock_epochs.c.epoch + 1, "updated_at": now},
            ).returning(lock_epochs.c.epoch)
        )).scalar_one()
        return int(epoch)

    return await db.transaction(tx)


def epoch_source(db: Database, scope: str, *, tables: Tables = PRIMITIVES) -> EpochSource:
    """The epochs of ``scope`` for a backend whose counters do not survive restarts
    (``LocalBackend``, ``RedisBackend``): each start of its state takes the next one."""

    async def source() -> int:
        return await next_epoch(db, scope, tables=tables)

    return source
