"""The idempotency-key table: atomic claim, completion, release, recovery points, reaping.

A claim is ``INSERT ... ON CONFLICT DO NOTHING`` followed by a read of the row (never
check-then-insert). A claim is held by a random ``lock_owner`` token; completion, release
and recovery-point updates are conditioned on still holding it, so a request that a stale
lock handed to a retry can no longer complete or release anything.

A claim also records its ``holder_id``: the process that runs it (``payguard.holders``). A
retry may take the key over when that process stopped renewing its heartbeat for
``holder_lease`` seconds (it died: seconds), or when the claim itself has not moved for
``lock_timeout`` seconds (the bound for a holder that is alive but stuck).
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

from sqlalchemy import ColumnElement, and_, bindparam, delete, func, or_, select, tuple_, update
from sqlalchemy.ext.asyncio import AsyncConnection

from payguard.clock import as_utc
from payguard.holders import holder_dead
from payguard.store import dialect
from payguard.store.prepared import Query, in_list, insert_rows, is_postgresql, pg_fetch, pg_sql
from payguard.store.reads import HotRead, HotReader
from payguard.store.schema import PRIMITIVES
from payguard.store.tables import Tables

__all__ = [
    "AbandonedKey",
    "Claim",
    "ClaimResult",
    "KeyRequest",
    "StoredResponse",
    "advance",
    "claim",
    "claim_many",
    "complete_abandoned",
    "count_recent",
    "count_recent_many",
    "drop_abandoned",
    "find_abandoned",
    "finish",
    "finish_many",
    "lookup",
    "new_owner",
    "reap_expired",
    "release",
    "release_unconfirmed",
    "takeable",
]


@dataclass(frozen=True, slots=True)
class StoredResponse:
    """A response as kept for replay. ``first_body``, when set, is what the first caller
    gets instead of ``body``: a secret shown once is never stored (only ``body`` is)."""

    status: int
    body: bytes
    headers: dict[str, str]
    first_body: bytes | None = None


@dataclass(frozen=True, slots=True)
class Claim:
    """A key this request now holds."""

    id: int
    owner: str
    recovery_point: str
    purchase_id: str | None
    recovered: bool  # True when taken over from a request that died


@dataclass(frozen=True, slots=True)
class ClaimResult:
    kind: Literal["claimed", "replay", "in_progress", "mismatch"]
    claim: Claim | None = None
    response: StoredResponse | None = None


_LOOKUPS: dict[str, HotRead] = {}  # by table prefix


def _lookup_read(tables: Tables) -> HotRead:
    """The replay lookup for ``tables``, built (and later compiled) once per prefix."""
    found = _LOOKUPS.get(tables.prefix)
    if found is None:
        keys = tables.idempotency_keys
        found = _LOOKUPS[tables.prefix] = HotRead(
            select(keys.c.fingerprint, keys.c.state, keys.c.expires_at, keys.c.status_code,
                   keys.c.response_body, keys.c.response_headers)
            .where(keys.c.principal == bindparam("principal"), keys.c.key == bindparam("key")))
    return found


async def lookup(reader: HotReader, *, principal: str, key: str, fingerprint: str,
                 now: datetime, tables: Tables = PRIMITIVES) -> ClaimResult | None:
    """A read-only look at a key: a replay or a mismatch when it settles the request,
    else None (new, expired, or in progress: the caller must go through ``claim``).

    Lets replays, the most common retry, skip the write transaction a claim needs: a
    replay is this one indexed read of the stored response (no transaction, no lock, no
    write).
    """
    row = await reader.fetch_one(_lookup_read(tables), principal=principal, key=key)
    if row is None or as_utc(row.expires_at) <= now:
        return None
    return _settled(row, fingerprint)


def _settled(row: Any, fingerprint: str) -> ClaimResult | None:
    """A mismatch or a replay when the existing row settles the request, else None."""
    if row.fingerprint != fingerprint:
        return ClaimResult("mismatch")
    if row.state == "completed":
        return ClaimResult("replay", response=StoredResponse(
            status=int(row.status_code), body=bytes(row.response_body),
            headers=json.loads(row.response_headers or "{}"),
        ))
    return None


async def claim(
    conn: AsyncConnection,
    *,
    principal: str,
    key: str,
    fingerprint: str,
    method: str,
    path: str,
    now: datetime,
    ttl: float,
    lock_timeout: float,
    owner: str | None = None,
    holder_id: str | None = None,
    holder_lease: float | None = None,
    tables: Tables = PRIMITIVES,
    operation: str | None = None,
) -> ClaimResult:
    """Try to take ``(principal, key)`` for the process ``holder_id``. The caller commits
    right after.

    ``operation`` is the kind of request, recorded on the key (e.g. ``"checkout"``), so the
    reconciler knows which abandoned keys it can finish without looking at their paths.

    ``owner`` (default: a fresh token) lets a caller whose COMMIT of the claim was lost
    give the key back later with ``release_unconfirmed``.
    """
    idempotency_keys = tables.idempotency_keys
    owner = owner or new_owner()
    expires_at = now + timedelta(seconds=ttl)
    inserted = (await conn.execute(
        dialect.insert(conn, idempotency_keys).values(
            principal=principal, key=key, fingerprint=fingerprint, method=method, path=path,
            operation=operation, state="in_progress", lock_owner=owner, locked_at=now,
            holder_id=holder_id,
            recovery_point="started", created_at=now, updated_at=now, expires_at=expires_at,
        ).on_conflict_do_nothing(
            index_elements=[idempotency_keys.c.principal, idempotency_keys.c.key]
        ).returning(idempotency_keys.c.id)
    )).scalar_one_or_none()
    if inserted is not None:
        return ClaimResult("claimed", Claim(int(inserted), owner, "started", None, False))

    row = (await conn.execute(
        select(idempotency_keys).where(
            idempotency_keys.c.principal == principal, idempotency_keys.c.key == key
        )
    )).one()
    return await _resolve(conn, row, fingerprint=fingerprint, method=method, path=path,
                          operation=operation, owner=owner, now=now, ttl=ttl,
                          lock_timeout=lock_timeout, holder_id=holder_id,
                          holder_lease=holder_lease, tables=tables)


async def _resolve(conn: AsyncConnection, row: Any, *, fingerprint: str, method: str,
                   path: str, operation: str | None, owner: str, now: datetime, ttl: float,
                   lock_timeout: float,
                   holder_id: str | None, holder_lease: float | None,
                   tables: Tables) -> ClaimResult:
    """What an existing key row means for a new request: take it over if expired or
    abandoned, else a replay, a mismatch or "in progress"."""
    idempotency_keys = tables.idempotency_keys
    expires_at = now + timedelta(seconds=ttl)
    if as_utc(row.expires_at) <= now:
        # Past retention: the key is new again. Conditional, so only one racer resets it.
        reset = (await conn.execute(
            update(idempotency_keys)
            .where(idempotency_keys.c.id == row.id, idempotency_keys.c.expires_at <= now)
            .values(fingerprint=fingerprint, method=method, path=path, operation=operation,
                    state="in_progress",
                    lock_owner=owner, locked_at=now, holder_id=holder_id,
                    recovery_point="started",
                    purchase_id=None, status_code=None, response_headers=None,
                    response_body=None, created_at=now, updated_at=now,
                    expires_at=expires_at)
            .returning(idempotency_keys.c.id)
        )).scalar_one_or_none()
        if reset is not None:
            return ClaimResult("claimed", Claim(int(reset), owner, "started", None, False))
        return ClaimResult("in_progress")

    settled = _settled(row, fingerprint)
    if settled is not None:
        return settled

    # In progress. If its holder died (or is stuck past the lock timeout): take over.
    taken = (await conn.execute(
        update(idempotency_keys)
        .where(
            idempotency_keys.c.id == row.id,
            takeable(now, lock_timeout=lock_timeout, holder_lease=holder_lease,
                     tables=tables),
        )
        .values(lock_owner=owner, locked_at=now, holder_id=holder_id, updated_at=now)
        .returning(idempotency_keys.c.recovery_point, idempotency_keys.c.purchase_id)
    )).first()
    if taken is None:
        return ClaimResult("in_progress")
    return ClaimResult(
        "claimed", Claim(int(row.id), owner, taken.recovery_point, taken.purchase_id, True)
    )


def takeable(now: datetime, *, lock_timeout: float,
             holder_lease: float | None, tables: Tables = PRIMITIVES) -> ColumnElement[bool]:
    """SQL: an in-progress claim whose request can no longer finish on its own.

    Its holder process stopped renewing its heartbeat (``holder_lease``; None: do not look
    at holders), or the claim has not moved for ``lock_timeout`` seconds whoever holds it.
    """
    c = tables.idempotency_keys.c
    stale = or_(c.locked_at.is_(None), c.locked_at < now - timedelta(seconds=lock_timeout))
    if holder_lease is not None:
        stale = or_(stale, holder_dead(c.holder_id, now, holder_lease, tables=tables))
    return and_(c.state == "in_progress", stale)


def _owned(claim_: Claim, tables: Tables) -> ColumnElement[bool]:
    idempotency_keys = tables.idempotency_keys
    return and_(idempotency_keys.c.id == claim_.id, idempotency_keys.c.lock_owner == claim_.owner,
                idempotency_keys.c.state == "in_progress")


async def count_recent(conn: AsyncConnection, principal: str, since: datetime, *,
                       cap: int, tables: Tables = PRIMITIVES) -> int:
    """How many keys ``principal`` stored since ``since``, counting no further than ``cap``
    (so the cost stays bounded however many keys there are)."""
    idempotency_keys = tables.idempotency_keys
    recent = (select(idempotency_keys.c.id)
              .where(idempotency_keys.c.principal == principal,
                     idempotency_keys.c.created_at >= since)
              .limit(cap).subquery())
    return int(await conn.scalar(select(func.count()).select_from(recent)) or 0)


async def count_recent_many(conn: AsyncConnection, principals: Iterable[str],
                            since: datetime, *, tables: Tables = PRIMITIVES
                            ) -> dict[str, int]:
    """``count_recent`` for several principals in one statement (the group-commit
    writer's batches); a principal with no recent key is absent."""
    wanted = sorted(set(principals))
    if not wanted:
        return {}
    rows = await _COUNT_RECENT.fetch(conn, tables, principals=wanted, since=since)
    return {str(r["principal"]): int(r["n"]) for r in rows}


_COUNT_RECENT = Query("count_recent_many", lambda d, t: (
    select(t.idempotency_keys.c.principal, func.count().label("n"))
    .where(in_list(d, t.idempotency_keys.c.principal, "principals"),
           t.idempotency_keys.c.created_at >= bindparam("since"))
    .group_by(t.idempotency_keys.c.principal)))


async def finish(conn: AsyncConnection, claim_: Claim, response: StoredResponse,
                 now: datetime, *, tables: Tables = PRIMITIVES) -> bool:
    """Store the final response in the caller's transaction. False: the claim was lost."""
    idempotency_keys = tables.idempotency_keys
    result = await conn.execute(
        update(idempotency_keys).where(_owned(claim_, tables)).values(**_completed(response, now)))
    return result.rowcount == 1


def _completed(response: StoredResponse, now: datetime) -> dict[str, Any]:
    """The columns of a key that holds its final answer."""
    return {"state": "completed", "status_code": response.status,
            "response_body": response.body, "response_headers": json.dumps(response.headers),
            "lock_owner": None, "locked_at": None, "recovery_point": "finished",
            "updated_at": now}


async def advance(conn: AsyncConnection, claim_: Claim, recovery_point: str, now: datetime,
                  *, purchase_id: str | None = None, tables: Tables = PRIMITIVES) -> bool:
    """Record that an atomic phase committed; also refreshes the lock. False: claim lost."""
    idempotency_keys = tables.idempotency_keys
    values: dict[str, object] = {"recovery_point": recovery_point, "locked_at": now,
                                 "updated_at": now}
    if purchase_id is not None:
        values["purchase_id"] = purchase_id
    result = await conn.execute(
        update(idempotency_keys).where(_owned(claim_, tables)).values(**values))
    return result.rowcount == 1


async def release(conn: AsyncConnection, claim_: Claim, *, tables: Tables = PRIMITIVES) -> bool:
    """Give the key back (a 5xx, a transient 409): the client's retry runs it again.

    Without recorded progress the key is forgotten (the retry is a new request). With
    progress (a phase committed a recovery point: a reserved purchase, a close), only the
    claim is let go, so the retry takes it over at once and resumes from that point instead
    of starting a second purchase beside the first.
    """
    idempotency_keys = tables.idempotency_keys
    forgotten = await conn.execute(delete(idempotency_keys).where(
        _owned(claim_, tables), idempotency_keys.c.recovery_point == "started"))
    if forgotten.rowcount == 1:
        return True
    result = await conn.execute(update(idempotency_keys).where(_owned(claim_, tables)).values(
        lock_owner=None, locked_at=None, holder_id=None))
    return result.rowcount == 1


def new_owner() -> str:
    """A claim's random holder token."""
    return secrets.token_hex(16)


async def release_unconfirmed(conn: AsyncConnection, *, principal: str, key: str,
                              owner: str, tables: Tables = PRIMITIVES) -> bool:
    """Forget a key claimed by ``owner`` whose claim's COMMIT outcome was never known.

    Only a claim still in progress under that owner goes: one that was taken over, or a
    key that never got claimed, is left alone.
    """
    idempotency_keys = tables.idempotency_keys
    result = await conn.execute(delete(idempotency_keys).where(
        idempotency_keys.c.principal == principal, idempotency_keys.c.key == key,
        idempotency_keys.c.lock_owner == owner, idempotency_keys.c.state == "in_progress",
    ))
    return result.rowcount == 1


@dataclass(frozen=True, slots=True)
class AbandonedKey:
    """An in-progress key whose request can no longer finish on its own (``takeable``):
    the reconciler completes it (``complete_abandoned``) or rolls it back
    (``drop_abandoned``), whichever a retry of that kind of request would have done."""

    id: int
    lock_owner: str | None
    operation: str | None
    purchase_id: str | None


async def find_abandoned(conn: AsyncConnection, now: datetime, lock_timeout: float,
                         holder_lease: float | None, *, limit: int,
                         tables: Tables = PRIMITIVES) -> list[AbandonedKey]:
    """Up to ``limit`` abandoned keys, oldest first."""
    c = tables.idempotency_keys.c
    rows = await conn.execute(
        select(c.id, c.lock_owner, c.operation, c.purchase_id)
        .where(takeable(now, lock_timeout=lock_timeout, holder_lease=holder_lease,
                        tables=tables))
        .order_by(c.id).limit(limit)
    )
    return [AbandonedKey(int(r.id), r.lock_owner, r.operation, r.purchase_id) for r in rows]


def _still_abandoned(key: AbandonedKey, now: datetime, lock_timeout: float,
                     holder_lease: float | None, tables: Tables) -> ColumnElement[bool]:
    """The key as it was found, and still takeable: a retry that took it over since changed
    its owner, and a holder that resumed (a process thawed after a pause) beats again."""
    c = tables.idempotency_keys.c
    owner = c.lock_owner.is_(None) if key.lock_owner is None else c.lock_owner == key.lock_owner
    return and_(c.id == key.id, owner,
                takeable(now, lock_timeout=lock_timeout, holder_lease=holder_lease,
                         tables=tables))


async def complete_abandoned(conn: AsyncConnection, key: AbandonedKey,
                             response: StoredResponse, now: datetime, lock_timeout: float,
                             holder_lease: float | None, *,
                             tables: Tables = PRIMITIVES) -> bool:
    """Store ``response`` as the dead request's answer, in the caller's transaction.
    False: a retry took the key over, or its holder came back, since it was found."""
    result = await conn.execute(
        update(tables.idempotency_keys)
        .where(_still_abandoned(key, now, lock_timeout, holder_lease, tables))
        .values(**_completed(response, now))
    )
    return result.rowcount == 1


async def drop_abandoned(conn: AsyncConnection, key: AbandonedKey, now: datetime,
                         lock_timeout: float, holder_lease: float | None, *,
                         tables: Tables = PRIMITIVES) -> bool:
    """Forget a dead request's key (a retry runs it afresh), in the caller's transaction.
    False: a retry took the key over, or its holder came back, since it was found."""
    result = await conn.execute(delete(tables.idempotency_keys).where(
        _still_abandoned(key, now, lock_timeout, holder_lease, tables)))
    return result.rowcount == 1


async def reap_expired(conn: AsyncConnection, now: datetime, *, tables: Tables = PRIMITIVES) -> int:
    """Delete keys past retention. Returns how many went."""
    idempotency_keys = tables.idempotency_keys
    result = await conn.execute(
        delete(idempotency_keys).where(idempotency_keys.c.expires_at <= now)
    )
    return int(result.rowcount)


@dataclass(frozen=True, slots=True)
class KeyRequest:
    """One request's key, for ``claim_many``."""

    principal: str
    key: str
    fingerprint: str
    method: str
    path: str
    operation: str | None = None


async def claim_many(conn: AsyncConnection, requests: list[KeyRequest], *, now: datetime,
                     ttl: float, lock_timeout: float, holder_id: str | None = None,
                     holder_lease: float | None = None, tables: Tables = PRIMITIVES
                     ) -> list[ClaimResult]:
    """Batch form of ``claim``, in the caller's (batch) transaction: one multi-row insert
    of every key and one read of the keys that already existed, whatever their number.

    Keys are inserted in (principal, key) order, the global lock order, so two batches on
    PostgreSQL wait for each other's keys without a cycle; a key inserted by a batch that
    has not committed yet makes this one wait, then see it completed (a replay). A key
    twice in ``requests`` is claimed once; the repeat is "in progress". Existing rows
    (rare: retries) go through the same rules as ``claim``, one by one.
    """
    idempotency_keys = tables.idempotency_keys
    results: list[ClaimResult | None] = [None] * len(requests)
    first: dict[tuple[str, str], int] = {}
    for i, r in enumerate(requests):
        if (r.principal, r.key) in first:
            results[i] = ClaimResult("in_progress")
        else:
            first[(r.principal, r.key)] = i
    if not first:
        return [r or ClaimResult("in_progress") for r in results]
    owners = {i: secrets.token_hex(16) for i in first.values()}
    expires_at = now + timedelta(seconds=ttl)
    ordered = sorted(first.items())
    values = [
        {"principal": p, "key": k, "fingerprint": requests[i].fingerprint,
         "method": requests[i].method, "path": requests[i].path,
         "operation": requests[i].operation, "state": "in_progress",
         "lock_owner": owners[i], "locked_at": now, "holder_id": holder_id,
         "recovery_point": "started",
         "created_at": now, "updated_at": now, "expires_at": expires_at}
        for (p, k), i in ordered
    ]
    # One multi-row statement (``store.prepared``), whatever the number of keys.
    inserted = await insert_rows(conn, idempotency_keys, values,
                                 returning=["id", "principal", "key"],
                                 skip_conflicts_on=["principal", "key"])
    for new_row in inserted:
        i = first[(new_row["principal"], new_row["key"])]
        results[i] = ClaimResult("claimed", Claim(int(new_row["id"]), owners[i], "started",
                                                  None, False))
    existing = [pk for pk, i in ordered if results[i] is None]
    if existing:
        rows = (await conn.execute(
            select(idempotency_keys).where(
                tuple_(idempotency_keys.c.principal, idempotency_keys.c.key).in_(existing))
        )).all()
        for row in rows:
            i = first[(row.principal, row.key)]
            r = requests[i]
            results[i] = await _resolve(conn, row, fingerprint=r.fingerprint, method=r.method,
                                        path=r.path, operation=r.operation, owner=owners[i],
                                        now=now, ttl=ttl,
                                        lock_timeout=lock_timeout, holder_id=holder_id,
                                        holder_lease=holder_lease, tables=tables)
    # A row deleted between the insert and the read (released by its holder): let the
    # client retry rather than guess.
    return [r or ClaimResult("in_progress") for r in results]


async def finish_many(conn: AsyncConnection, done: list[tuple[Claim, StoredResponse]],
                      now: datetime, *, purchase_ids: list[str | None] | None = None,
                      tables: Tables = PRIMITIVES) -> bool:
    """Batch form of ``finish``: every response stored with its key in one statement, and
    the purchase each key made (``purchase_ids``, parallel to ``done``; None: none).
    False when any claim was lost (the caller rolls back)."""
    if not done:
        return True
    named = purchase_ids or [None] * len(done)
    idempotency_keys = tables.idempotency_keys
    if is_postgresql(conn):
        rows = await pg_fetch(
            conn, pg_sql(_PG_FINISH, tables), [c.id for c, _r in done], [c.owner for c, _r in done],
            [r.status for _c, r in done], [r.body for _c, r in done],
            [json.dumps(r.headers) for _c, r in done], named, now)
        return len(rows) == len(done)
    result = await conn.execute(
        update(idempotency_keys)
        .where(idempotency_keys.c.id == bindparam("b_id"),
               idempotency_keys.c.lock_owner == bindparam("b_owner"),
               idempotency_keys.c.state == "in_progress")
        .values(state="completed", status_code=bindparam("b_status"),
                response_body=bindparam("b_body"), response_headers=bindparam("b_headers"),
                purchase_id=func.coalesce(bindparam("b_purchase"),
                                          idempotency_keys.c.purchase_id),
                lock_owner=None, locked_at=None, recovery_point="finished", updated_at=now),
        [{"b_id": c.id, "b_owner": c.owner, "b_status": r.status, "b_body": r.body,
          "b_headers": json.dumps(r.headers), "b_purchase": purchase_id}
         for (c, r), purchase_id in zip(done, named, strict=True)],
    )
    return result.rowcount in (-1, len(done))


# Every response of a batch stored with its key: one statement, one SQL text.
_PG_FINISH = (
    "UPDATE {p}idempotency_keys AS k SET state = 'completed', status_code = v.status, "
    "response_body = v.body, response_headers = v.headers, "
    "purchase_id = coalesce(v.purchase_id, k.purchase_id), lock_owner = NULL, "
    "locked_at = NULL, recovery_point = 'finished', updated_at = $7 "
    "FROM unnest($1::BIGINT[], $2::VARCHAR(40)[], $3::INTEGER[], $4::BYTEA[], $5::TEXT[], "
    "$6::VARCHAR(40)[]) AS v(id, owner, status, body, headers, purchase_id) "
    "WHERE k.id = v.id AND k.lock_owner = v.owner AND k.state = 'in_progress' "
    "RETURNING k.id"
)
