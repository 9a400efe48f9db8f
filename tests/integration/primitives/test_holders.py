"""Holder liveness: a claim whose process stopped its heartbeat is takeable within the lease;
a claim of a live process only after the lock timeout; a late holder can finish nothing."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta

from payguard.clock import utcnow
from payguard.holders import Heartbeat, register, retire
from payguard.idempotency import StoredResponse, store
from payguard.idempotency.keys import fingerprint
from payguard.store.uow import Database, UnitOfWork

LEASE = 4.0
FP = fingerprint("POST", "/x", b"{}")


async def _claim(db: Database, now: datetime, holder: str) -> store.ClaimResult:
    async def tx(uow: UnitOfWork) -> store.ClaimResult:
        r = await store.claim(uow.conn, principal="u", key="k", fingerprint=FP, method="POST",
                              path="/x", now=now, ttl=3600, lock_timeout=60,
                              holder_id=holder, holder_lease=LEASE)
        return r
    return await db.transaction(tx)


async def _register(db: Database, holder: str, at: datetime) -> None:
    async def tx(uow: UnitOfWork) -> None:
        await register(uow.conn, holder, at)
    await db.transaction(tx)


async def test_a_dead_holders_claim_is_taken_over_after_the_lease(database: Database) -> None:
    t0 = utcnow()
    await _register(database, "hld_a", t0)
    await _register(database, "hld_b", t0)
    first = await _claim(database, t0, "hld_a")
    assert first.kind == "claimed"
    # hld_a keeps beating: hld_b must wait (a live holder keeps its claim).
    await _register(database, "hld_a", t0 + timedelta(seconds=3))
    await _register(database, "hld_b", t0 + timedelta(seconds=6))
    assert (await _claim(database, t0 + timedelta(seconds=6), "hld_b")).kind == "in_progress"
    # hld_a stops beating at t0+3: at t0+3+LEASE+ it is dead, long before the 60 s timeout.
    at = t0 + timedelta(seconds=3 + LEASE + 0.5)
    await _register(database, "hld_b", at)
    taken = await _claim(database, at, "hld_b")
    assert taken.kind == "claimed" and taken.claim is not None and taken.claim.recovered

    async def finish(uow: UnitOfWork) -> bool:
        assert first.claim is not None
        return await store.finish(uow.conn, first.claim, StoredResponse(201, b"{}", {}), at)

    # hld_a resumes (it was only frozen): its claim is gone, it can't complete the key.
    assert await database.transaction(finish) is False


async def test_a_live_but_stuck_holder_keeps_its_claim_until_the_lock_timeout(
        database: Database) -> None:
    t0 = utcnow()
    await _register(database, "hld_a", t0)
    assert (await _claim(database, t0, "hld_a")).kind == "claimed"
    at = t0 + timedelta(seconds=59)
    await _register(database, "hld_a", at)  # alive, beating, but the request never moves
    assert (await _claim(database, at, "hld_b")).kind == "in_progress"
    later = t0 + timedelta(seconds=61)
    await _register(database, "hld_a", later)
    assert (await _claim(database, later, "hld_b")).kind == "claimed"


async def test_a_retired_holders_claim_is_takeable_at_once(database: Database) -> None:
    t0 = utcnow()
    await _register(database, "hld_a", t0)
    assert (await _claim(database, t0, "hld_a")).kind == "claimed"

    async def gone(uow: UnitOfWork) -> None:
        await retire(uow.conn, "hld_a")

    await database.transaction(gone)
    assert (await _claim(database, t0 + timedelta(seconds=0.1), "hld_b")).kind == "claimed"


async def test_the_heartbeat_registers_renews_and_retires(database: Database) -> None:
    beat = Heartbeat(database, lease=0.4)
    await beat.start()
    first = await _claim(database, utcnow(), beat.id)
    assert first.kind == "claimed"
    before = beat.beats
    await asyncio.sleep(0.5)
    assert beat.beats > before  # renewed on its own
    assert (await _claim(database, utcnow(), "hld_other")).kind == "in_progress"
    await beat.stop()
    assert (await _claim(database, utcnow(), "hld_other")).kind == "claimed"


async def test_a_released_claim_keeps_its_recovery_point_for_the_retry(
        database: Database) -> None:
    t0 = utcnow()
    first = await _claim(database, t0, "hld_a")
    assert first.claim is not None

    async def progress_then_release(uow: UnitOfWork) -> None:
        assert first.claim is not None
        assert await store.advance(uow.conn, first.claim, "reserved", t0, purchase_id="pur_1")
        assert await store.release(uow.conn, first.claim)

    await database.transaction(progress_then_release)
    # The retry (any process, at once) resumes from the reserved purchase, not from scratch.
    retry = await _claim(database, t0 + timedelta(seconds=0.1), "hld_b")
    assert retry.kind == "claimed" and retry.claim is not None
    assert (retry.claim.recovery_point, retry.claim.purchase_id) == ("reserved", "pur_1")

    async def release_fresh(uow: UnitOfWork) -> None:
        assert retry.claim is not None
        assert await store.release(uow.conn, retry.claim)

    await database.transaction(release_fresh)
    again = await _claim(database, t0 + timedelta(seconds=0.2), "hld_c")
    assert again.claim is not None and again.claim.recovered
