"""The idempotency guard at the store level: 5xx release, takeover after a crash, lost claims,
the operation kind on the claim, and the settling of abandoned keys."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from sqlalchemy import func, insert, select, update

from payguard.api.problems import render_error, render_problem
from payguard.clock import utcnow
from payguard.errors import NotFound, PayguardError, RequestInProgress
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


def _failing(exc: Exception):  # type: ignore[no-untyped-def]
    async def effects(_uow: UnitOfWork, _claim: object) -> StoredResponse:
        raise exc
    return effects


async def _keys(db: Database) -> list[tuple[str, str, int | None]]:
    async with db.read() as uow:
        rows = await uow.conn.execute(select(idempotency_keys.c.key, idempotency_keys.c.state,
                                             idempotency_keys.c.status_code))
        return sorted((r.key, r.state, r.status_code) for r in rows)


async def test_the_renderer_decides_between_a_stored_4xx_and_a_released_key(
        database: Database) -> None:
    """Errors carry no status: the guard asks the renderer it was given. The same error is
    stored and replayed when the renderer makes it a 4xx, and gives the key back when the
    renderer makes it a 5xx."""
    as_4xx = _guard(database)  # the API's mapping: NOT_FOUND is 404
    args = dict(principal="u1", method="POST", path="/x", body=b"{}")
    stored = await as_4xx.execute(**args, key="k404",  # type: ignore[arg-type]
                                  effects=_failing(NotFound("no such thing")))
    assert stored.response.status == 404 and not stored.replayed
    replay = await as_4xx.execute(**args, key="k404", effects=_effect("never"))  # type: ignore[arg-type]
    assert replay.replayed and replay.response.body == stored.response.body

    def as_503(exc: PayguardError) -> StoredResponse:
        return render_problem(503, exc.code, exc.title, exc.detail)

    as_5xx = IdempotencyGuard(database, ttl=3600, lock_timeout=60, render_error=as_503)
    with pytest.raises(NotFound):
        await as_5xx.execute(**args, key="k503",  # type: ignore[arg-type]
                             effects=_failing(NotFound("no such thing")))
    assert await _keys(database) == [("k404", "completed", 404)]  # k503 was given back
    retried = await as_5xx.execute(**args, key="k503", effects=_effect("ran"))  # type: ignore[arg-type]
    assert (retried.response.status, retried.replayed) == (201, False)
    assert await _count_effects(database) == 1


async def test_the_operation_kind_is_recorded_and_abandoned_keys_are_settled_once(
        database: Database) -> None:
    now = utcnow()

    async def claim(key: str, operation: str | None, at: float = 0) -> store.ClaimResult:
        return await database.transaction(lambda uow: store.claim(
            uow.conn, principal="u", key=key, fingerprint=fingerprint("POST", "/x", b"{}"),
            method="POST", path="/x", now=now + timedelta(seconds=at), ttl=3600,
            lock_timeout=10, operation=operation))

    for key, operation in (("co-1", "checkout"), ("co-2", "checkout"), ("plain", None),
                           ("fresh", "checkout")):
        assert (await claim(key, operation, at=0 if key != "fresh" else 8)).kind == "claimed"

    later = now + timedelta(seconds=12)  # past the lock timeout of all but "fresh"
    async with database.read() as uow:
        found = await store.find_abandoned(uow.conn, later, 10, None, limit=10)
    assert [(k.operation, k.purchase_id) for k in found] == [
        ("checkout", None), ("checkout", None), (None, None)]
    co1, co2, plain = found

    answer = StoredResponse(201, b'{"session_id":"cs_1"}', {"content-type": "application/json"})
    # A retry takes co-2 over between the look and the write: the reconciler leaves it.
    assert (await claim("co-2", "checkout", at=12)).kind == "claimed"
    results = []
    for key in (co1, co2):
        results.append(await database.transaction(
            lambda uow, k=key: store.complete_abandoned(uow.conn, k, answer, later, 10, None)))
    results.append(await database.transaction(
        lambda uow: store.drop_abandoned(uow.conn, plain, later, 10, None)))
    assert results == [True, False, True]
    # Settled once: a second pass finds nothing to change.
    assert await database.transaction(
        lambda uow: store.complete_abandoned(uow.conn, co1, answer, later, 10, None)) is False
    async with database.read() as uow:
        rows = {r.key: r for r in await uow.conn.execute(select(idempotency_keys))}
    assert set(rows) == {"co-1", "co-2", "fresh"}
    assert (rows["co-1"].state, rows["co-1"].status_code, bytes(rows["co-1"].response_body),
            rows["co-1"].lock_owner) == ("completed", 201, answer.body, None)
    assert rows["co-2"].state == "in_progress" and rows["co-2"].operation == "checkout"
    assert rows["fresh"].state == "in_progress" and rows["fresh"].operation == "checkout"
    replay = await claim("co-1", "checkout", at=13)
    assert replay.kind == "replay" and replay.response is not None
    assert replay.response.body == answer.body
