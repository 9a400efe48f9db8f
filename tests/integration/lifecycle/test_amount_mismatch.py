"""``fulfil`` never completes a purchase on a payment of another amount or currency: it
closes the purchase as refunded, books nothing, and refunds the payment in full through the
provider (on SQLite and PostgreSQL). Not reachable through HTTP by design: our own checkout
creates every session, and a session is matched only to the purchase that recorded it."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import insert, select

from payguard.api.problems import render_error
from payguard.clock import utcnow
from payguard.config import Settings
from payguard.holders import Heartbeat
from payguard.idempotency import IdempotencyGuard
from payguard.idempotency.responses import json_response
from payguard.locks import LockService
from payguard.locks.local import LocalBackend
from payguard.outbox import OutboxDispatcher
from payguard.providers import ProviderSession
from payguard.service import users, wallets
from payguard.service.audit import run_audit
from payguard.service.auth import Authenticator, TokenCache
from payguard.service.batch_writer import BatchWriter
from payguard.service.context import AppContext
from payguard.service.inbox_applier import InboxApplier
from payguard.service.lifecycle import AMOUNT_MISMATCH, fulfil
from payguard.store.schema import purchases
from payguard.store.uow import Database, UnitOfWork
from payguard.telemetry import NO_METRICS


class RecordingProvider:
    name = "recording"

    def __init__(self, paid: ProviderSession) -> None:
        self.refunds: list[dict[str, Any]] = []
        self.paid = paid

    async def retrieve_checkout_session(self, session_id: str) -> ProviderSession:
        assert session_id == self.paid.id
        return self.paid

    async def refund(self, **kwargs: Any) -> str:
        self.refunds.append(kwargs)
        return f"re_{len(self.refunds)}"


def _session(pid: str, amount: int, currency: str) -> ProviderSession:
    return ProviderSession(id=f"cs_{pid}", url=None, status="complete", payment_status="paid",
                           amount_total=amount, currency=currency,
                           expires_at=utcnow() + timedelta(hours=1), payment_intent=f"pi_{pid}",
                           metadata={"purchase_id": pid})


async def _seed(database: Database) -> str:
    async def tx(uow: UnitOfWork) -> str:
        user = await users.create_user(uow.conn, email="m@t.test", name=None, currency="USD")
        for pid in ("pur_low", "pur_eur", "pur_ok"):
            await uow.conn.execute(insert(purchases).values(
                id=pid, user_id=user["id"], order_number=f"ORD-{pid}", kind="topup",
                status="pending", payment_method="card", item_key=f"topup:{pid}", amount=700,
                currency="USD", full_price=700, provider_session_id=f"cs_{pid}",
                checkout_url="http://x", expires_at=utcnow() + timedelta(hours=1),
                created_at=utcnow(), updated_at=utcnow()))
        return str(user["id"])

    return await database.transaction(tx)


@pytest.mark.parametrize("case", [("pur_low", 1, "USD"), ("pur_eur", 700, "EUR")])
async def test_mismatched_payment_is_refunded_not_fulfilled(
        database: Database, case: tuple[str, int, str]) -> None:
    pid, paid, currency = case
    user_id = await _seed(database)
    provider = RecordingProvider(_session(pid, paid, currency))
    settings = Settings()
    ctx = AppContext(
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

    assert await fulfil(ctx, pid, _session(pid, paid, currency)) == "mismatch"
    # Repeats (webhook redeliveries, the reconciler) change nothing more.
    assert await fulfil(ctx, pid, _session(pid, paid, currency)) == "already"
    assert provider.refunds == [{"payment_intent": f"pi_{pid}", "amount": paid,
                                 "idempotency_key": f"payguard:{pid}:refund",
                                 "reason": AMOUNT_MISMATCH}]
    async with database.read() as uow:
        row = (await uow.conn.execute(select(purchases).where(purchases.c.id == pid))).one()
        wallet = await wallets.get_wallet(uow.conn, user_id, "USD")
        audit = await run_audit(uow.conn)
    assert (row.status, row.refund_status, row.receipt_number) == ("refunded", "done", None)
    assert row.failure_reason == AMOUNT_MISMATCH
    assert wallet["balance"] == 0 and audit["ok"], audit

    # The same amount and currency completes as before (the check is not too strict).
    assert await fulfil(ctx, "pur_ok", _session("pur_ok", 700, "USD")) == "completed"
    async with database.read() as uow:
        assert (await wallets.get_wallet(uow.conn, user_id, "USD"))["balance"] == 700
