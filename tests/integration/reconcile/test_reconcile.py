"""The reconciler against real SQLite and PostgreSQL with a provider that is down:
backoff on stuck purchases, dead idempotency keys completed or rolled back, one run at a time."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import insert, select

from payguard.api.deps import json_response
from payguard.api.problems import render_error
from payguard.clock import utcnow
from payguard.config import Settings
from payguard.errors import ProviderUnavailable
from payguard.holders import Heartbeat
from payguard.idempotency import IdempotencyGuard
from payguard.locks import LockService
from payguard.locks.local import LocalBackend
from payguard.outbox import OutboxDispatcher
from payguard.service import users
from payguard.service.auth import Authenticator, TokenCache
from payguard.service.batch_writer import BatchWriter
from payguard.service.context import AppContext
from payguard.service.inbox_applier import InboxApplier
from payguard.service.reconcile import backoff_seconds, reconcile
from payguard.store.schema import idempotency_keys, purchases
from payguard.store.uow import Database, UnitOfWork
from payguard.telemetry import NO_METRICS


class DownProvider:
    """Every call fails, as when the provider is unreachable; counts the attempts."""

    name = "down"

    def __init__(self) -> None:
        self.calls = 0

    async def retrieve_checkout_session(self, session_id: str) -> Any:
        self.calls += 1
        await asyncio.sleep(0.05)  # long enough for concurrent runs to overlap
        raise ProviderUnavailable("connection refused")

    async def create_checkout_session(self, **_kwargs: Any) -> Any:
        self.calls += 1
        raise ProviderUnavailable("connection refused")


def _ctx(database: Database, provider: DownProvider) -> AppContext:
    settings = Settings(stuck_after=60, idempotency_lock_timeout=30)
    return AppContext(
        settings=settings, db=database,
        guard=IdempotencyGuard(database, ttl=3600, lock_timeout=30, render_error=render_error),
        locks=LockService(LocalBackend()), provider=provider,  # type: ignore[arg-type]
        outbox=OutboxDispatcher(database, settings), metrics=NO_METRICS, admin_token="t",
        auth=Authenticator(lambda digest: users.find_by_token_digest(database, digest), "t",
                           TokenCache(ttl=0, max_entries=0)),
        inbox=InboxApplier(database),
        heartbeat=Heartbeat(database, lease=settings.holder_lease),
        writer=BatchWriter(database, settings, render_ok=json_response,
                           render_error=render_error))


async def _seed(database: Database) -> dict[str, str]:
    """A user, a stuck top-up with a session, and a fresh one; dead and live keys."""
    old = utcnow() - timedelta(hours=2)

    async def tx(uow: UnitOfWork) -> dict[str, str]:
        user = await users.create_user(uow.conn, email="a@t.test", name=None, currency="USD")
        uid = user["id"]
        for pid, created, session in (("pur_stuck", old, "cs_stuck"),
                                      ("pur_fresh", utcnow(), "cs_fresh")):
            await uow.conn.execute(insert(purchases).values(
                id=pid, user_id=uid, order_number=f"ORD-{pid}", kind="topup",
                status="pending", payment_method="card", item_key=f"topup:{pid}", amount=500,
                currency="USD", full_price=500, provider_session_id=session,
                checkout_url="http://x", expires_at=utcnow() + timedelta(hours=1),
                created_at=created, updated_at=created))
        base = {"principal": f"user:{uid}", "fingerprint": "f", "method": "POST",
                "state": "in_progress", "created_at": old, "updated_at": old,
                "expires_at": utcnow() + timedelta(days=1)}
        for row in [
            # died before doing anything: rolled back
            {**base, "key": "dead-started", "path": "/api/purchases", "lock_owner": "a",
             "locked_at": old},
            # died after its checkout session was recorded: completed with the 201
            {**base, "key": "dead-session", "path": "/api/checkout/sessions",
             "operation": "checkout", "lock_owner": "b", "locked_at": old,
             "recovery_point": "session_created", "purchase_id": "pur_stuck"},
            # another kind of request on the same purchase (no operation recorded): its
            # key is rolled back, never answered with the checkout's 201
            {**base, "key": "dead-cancel", "path": "/api/purchases/pur_stuck/cancel",
             "lock_owner": "d", "locked_at": old, "recovery_point": "canceled",
             "purchase_id": "pur_stuck"},
            # still running (lock fresh): untouched
            {**base, "key": "alive", "path": "/api/purchases", "lock_owner": "c",
             "locked_at": utcnow()},
        ]:  # one by one: an executemany would take the first row's columns for all
            await uow.conn.execute(insert(idempotency_keys).values(**row))
        return {"user_id": uid}

    return await database.transaction(tx)


async def test_provider_down_backs_off_and_dead_keys_are_repaired(database: Database) -> None:
    seeded = await _seed(database)
    provider = DownProvider()
    ctx = _ctx(database, provider)

    runs = await asyncio.gather(*(reconcile(ctx) for _ in range(3)))
    worked = [r for r in runs if not r["skipped"]]
    assert len(worked) == 1 and provider.calls == 1  # one run at a time, the others skip
    run = worked[0]
    assert (run["checked"], run["deferred"], run["completed"]) == (1, 1, 0)
    assert (run["keys_completed"], run["keys_rolled_back"]) == (1, 2)
    assert all(r == dict.fromkeys(r, 0) | {"skipped": True} for r in runs if r["skipped"])

    async with database.read() as uow:
        stuck = (await uow.conn.execute(
            select(purchases).where(purchases.c.id == "pur_stuck"))).one()
        keys = {k.key: k for k in await uow.conn.execute(select(idempotency_keys))}
    assert stuck.status == "pending" and stuck.check_attempts == 1
    due = stuck.next_check_at if stuck.next_check_at.tzinfo else stuck.next_check_at.replace(
        tzinfo=UTC)
    assert timedelta(seconds=10) < due - datetime.now(UTC) <= timedelta(
        seconds=backoff_seconds(1))
    assert set(keys) == {"dead-session", "alive"}
    done = keys["dead-session"]
    assert (done.state, done.status_code) == ("completed", 201)
    body = json.loads(bytes(done.response_body))
    assert (body["session_id"], body["purchase_id"]) == ("cs_stuck", "pur_stuck")
    assert keys["alive"].state == "in_progress" and keys["alive"].lock_owner == "c"

    # Within the backoff the stuck purchase is not looked at again.
    again = await reconcile(ctx)
    assert (again["checked"], again["deferred"], provider.calls) == (0, 0, 1)
    assert seeded["user_id"]
