"""Fencing: a write made under a lock carries the lease's token, and the database refuses a
token older than the newest one the resource has accepted.

A lease alone cannot stop a holder that was paused past its expiry from writing after the
next holder did; the fence can, because it is checked in the writer's own transaction:

    async def write(uow: UnitOfWork) -> None:   # run by ``await db.transaction(write)``
        await advance_fence(uow.conn, f"purchase:{pid}", lease.fencing_token)
        ...  # the protected write, committed together with the fence

The upsert takes the fence row's lock until commit, so two writers on one resource are
serialised and the older token loses whichever order they arrive in.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from payguard.clock import utcnow
from payguard.locks.errors import StaleFencingToken
from payguard.store.schema import PRIMITIVES
from payguard.store.tables import Tables

__all__ = ["Fence", "StaleFencingToken", "advance_fence"]


async def advance_fence(conn: AsyncConnection, resource: str, token: int, *,
                        tables: Tables = PRIMITIVES) -> None:
    """Record ``token`` for ``resource`` in the open transaction, or raise
    ``StaleFencingToken`` if a newer token was already accepted.

    An equal token passes: one holder may write the same resource several times.
    """
    fences = tables.fences
    insert = postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
    ins = insert(fences).values(resource=resource, last_token=token, updated_at=utcnow())
    stmt = ins.on_conflict_do_update(
        index_elements=[fences.c.resource],
        set_={"last_token": ins.excluded.last_token, "updated_at": ins.excluded.updated_at},
        where=fences.c.last_token <= ins.excluded.last_token,
    ).returning(fences.c.last_token)
    if (await conn.execute(stmt)).first() is None:
        raise StaleFencingToken(
            f"fencing token {token} for {resource!r} is older than one already accepted",
            resource=resource, token=token,
        )


@dataclass(frozen=True, slots=True)
class Fence:
    """A lease's token for one resource, carried into the transactions it protects."""

    resource: str
    token: int
    tables: Tables = PRIMITIVES

    async def check(self, conn: AsyncConnection) -> None:
        """``advance_fence`` in the open transaction: raises ``StaleFencingToken`` when a
        newer holder already wrote."""
        await advance_fence(conn, self.resource, self.token, tables=self.tables)
