"""The idempotency guard at the store level: 5xx release, takeover after a crash, lost claims."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from sqlalchemy import func, insert, select, update

from payguard.api.problems import render_error
from payguard.clock import utcnow
from payguard.errors import RequestInProgress
from payguard.idempotency import IdempotencyGuard, StoredResponse, store
from payguard.idempotency.keys import fingerprint
from payguard.store.schema import fences, idempotency_keys
from payguard.store.uow import Database, UnitOfWork


def _guard(db: Database, **kw: float) -> IdempotencyGuard:
    return IdempotencyGuard(db, ttl=kw.get("ttl", 3600), lock_timeout=kw.get("lock", 60),
                            render_error=render_error)


async def _count_effects(db: Database) -> int:
    async with db.read() as uow:
        return int(await uow.conn.scalar(select(func.count()).select_from(fences)) or 0)


def _effect(name: str, *, fail: bool = False):  # type: ignore[no-untyped-def]
    async def effects(uow: UnitOfWork, _claim: object) -> StoredResponse:
        await uow.conn.execute(insert(fences).values(resource=name, last_token=1,
                                                     updated_at=utcnow()))
        if fail:
            raise RuntimeError("injected failure after the effects ran")
        return StoredResponse(201, json.dumps({"ok": name}).encode(),
                              {"content-type": "application/json"})
    return effects


async def test_a_5xx_is_not_stored_and_the_retry_succeeds(database: Database) -> None:
    guard = _guard(database)
    args = dict(principal="u1", key="k", method="POST", path="/x", body=b"{}")
    with pytest.raises(RuntimeError):
        await guard.execute(**args, effects=_effect("e1", fail=True))  # type: ignore[arg-type]
    assert await _count_effects(database) == 0  # rolled back with the failure
    outcome = await guard.execute(**args, effects=_effect("e1"))  # type: ignore[arg-type]
    assert (outcome.response.status, outcome.replayed) == (201, False)
    replay = await guard.execute(**args, effects=_effect("e1"))  # type: ignore[arg-type]
    assert replay.replayed and replay.response.body == outcome.response.body
    assert await _count_effects(database) == 1


async def test_a_dead_claim_is_taken_over_only_after_the_lock_timeout(database: Database) -> None:
    now = utcnow()
    fp = fingerprint("POST", "/x", b"{}")

    async def claim(at_offset: float) -> store.ClaimResult:
        async def tx(uow: UnitOfWork) -> store.ClaimResult:
            r = await store.claim(uow.conn, principal="u", key="k", fingerprint=fp,
                                  method="POST", path="/x",
                                  now=now + timedelta(seconds=at_offset), ttl=3600,
                                  lock_timeout=10)
            return r
        return await database.transaction(tx)

    first = await claim(0)
    assert first.kind == "claimed"
    assert (await claim(5)).kind == "in_progress"
    taken = await claim(11)
    assert taken.kind == "claimed" and taken.claim is not None and taken.claim.recovered
    # The original holder comes back from its pause: its claim is gone, it can't finish.
    assert first.claim is not None

    async def finish(uow: UnitOfWork) -> bool:
        assert first.claim is not None
        return await store.finish(uow.conn, first.claim, StoredResponse(201, b"{}", {}), now)

    assert await database.transaction(finish) is False


async def test_a_lost_claim_rolls_back_its_effects(database: Database) -> None:
    guard = _guard(database)
    args = dict(principal="u1", key="k2", method="POST", path="/x", body=b"{}")

    async def slow_effects(uow: UnitOfWork, claim: object) -> StoredResponse:
        # While we work, a retry takes the key over (our lock timed out): its claim
        # replaces our owner token, exactly as store.claim's takeover does.
        await uow.conn.execute(update(idempotency_keys)
                               .where(idempotency_keys.c.key == "k2")
                               .values(lock_owner="the-retry"))
        return await _effect("lost")(uow, claim)

    with pytest.raises(RequestInProgress):
        await guard.execute(**args, effects=slow_effects)  # type: ignore[arg-type]
    assert await _count_effects(database) == 0
