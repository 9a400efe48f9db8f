"""The operator's purchase views: search across users, and one purchase with everything
that touched it (ledger, receipt, items, provider session, webhooks, emails, keys).

Reads only; each call runs inside the caller's read-only unit of work.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.ext.asyncio import AsyncConnection

from payguard.clock import isoformat
from payguard.errors import NotFound
from payguard.service.inbox_view import event_view
from payguard.service.paging import Cursor
from payguard.service.purchases import items_of
from payguard.service.records import PurchaseRecord
from payguard.service.views import purchase_view, receipt_view
from payguard.states import PurchaseStatus
from payguard.store.schema import (
    accounts,
    entries,
    idempotency_keys,
    inbox_events,
    outbox_messages,
    purchases,
    receipts,
    stock_items,
    transfers,
    users,
)

__all__ = ["PurchaseFilter", "email_view", "purchase_detail", "search_purchases"]


@dataclass(frozen=True, slots=True)
class PurchaseFilter:
    status: PurchaseStatus | None = None
    user_id: str | None = None
    kind: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    # Exact match on the order number, receipt number, provider session id or purchase id:
    # each is UNIQUE, so each lookup is one index probe.
    q: str | None = None


def _with_user(row: Any, items: list[str]) -> dict[str, Any]:
    view = purchase_view(PurchaseRecord.from_row(row), items)
    view["user_email"] = row.user_email
    view["user_name"] = row.user_name
    return view


def _purchases_with_users() -> Any:
    return select(purchases, users.c.email.label("user_email"),
                  users.c.name.label("user_name")).join(users, users.c.id == purchases.c.user_id)


async def search_purchases(conn: AsyncConnection, f: PurchaseFilter, *, limit: int,
                           cursor: Cursor | None) -> dict[str, Any]:
    """Newest first, ``limit`` per page; ``next_cursor`` continues below the last row."""
    query = _purchases_with_users()
    if f.q:
        query = query.where(or_(purchases.c.order_number == f.q,
                                purchases.c.receipt_number == f.q,
                                purchases.c.provider_session_id == f.q,
                                purchases.c.id == f.q))
    if f.status:
        query = query.where(purchases.c.status == f.status)
    if f.user_id:
        query = query.where(purchases.c.user_id == f.user_id)
    if f.kind:
        query = query.where(purchases.c.kind == f.kind)
    if f.since:
        query = query.where(purchases.c.created_at >= f.since)
    if f.until:
        query = query.where(purchases.c.created_at < f.until)
    if cursor:
        query = query.where(cursor.older(purchases.c.created_at, purchases.c.id))
    query = query.order_by(purchases.c.created_at.desc(), purchases.c.id.desc()).limit(limit + 1)
    rows = (await conn.execute(query)).all()
    page = rows[:limit]
    items = await items_of(conn, [r.id for r in page])
    return {
        "purchases": [_with_user(r, items.get(r.id, [])) for r in page],
        "next_cursor": Cursor.after(page[-1].created_at, page[-1].id)
        if len(rows) > limit else None,
    }


def email_view(row: Any) -> dict[str, Any]:
    return {
        "id": str(row.id), "kind": row.kind, "recipient": row.recipient,
        "subject": row.subject, "state": row.state, "attempts": int(row.attempts),
        "transport": row.transport, "last_error": row.last_error,
        "purchase_id": row.purchase_id, "user_id": row.user_id,
        "created_at": isoformat(row.created_at), "sent_at": isoformat(row.sent_at),
        "next_attempt_at": isoformat(row.next_attempt_at),
    }


async def _ledger(conn: AsyncConnection, purchase_id: str) -> list[dict[str, Any]]:
    rows = await conn.execute(
        select(entries.c.id, entries.c.transfer_id, entries.c.account_id, entries.c.amount,
               entries.c.balance_after, entries.c.created_at, transfers.c.kind,
               transfers.c.reason, transfers.c.currency, accounts.c.kind.label("account_kind"),
               accounts.c.owner_id)
        .join(transfers, transfers.c.id == entries.c.transfer_id)
        .join(accounts, accounts.c.id == entries.c.account_id)
        .where(transfers.c.purchase_id == purchase_id)
        .order_by(entries.c.id)
    )
    return [{
        "id": str(r.id), "transfer_id": r.transfer_id, "account_id": r.account_id,
        "account_kind": r.account_kind, "owner_id": r.owner_id, "amount": int(r.amount),
        "balance_after": int(r.balance_after), "currency": r.currency, "kind": r.kind,
        "reason": r.reason, "created_at": isoformat(r.created_at),
    } for r in rows]


async def _keys(conn: AsyncConnection, purchase_id: str) -> list[dict[str, Any]]:
    """Keys linked to the purchase, and the admin's and user's keyed actions on it."""
    paths = [f"/api/admin/purchases/{purchase_id}/refund",
             f"/api/purchases/{purchase_id}/cancel"]
    k = idempotency_keys
    rows = await conn.execute(
        select(k.c.principal, k.c.key, k.c.method, k.c.path, k.c.state, k.c.recovery_point,
               k.c.status_code, k.c.created_at, k.c.expires_at)
        .where(or_(k.c.purchase_id == purchase_id, k.c.path.in_(paths)))
        .order_by(k.c.created_at, k.c.id)
    )
    return [{
        "principal": r.principal, "key": r.key, "method": r.method, "path": r.path,
        "state": r.state, "recovery_point": r.recovery_point,
        "status_code": None if r.status_code is None else int(r.status_code),
        "created_at": isoformat(r.created_at), "expires_at": isoformat(r.expires_at),
    } for r in rows]


async def purchase_detail(conn: AsyncConnection, purchase_id: str) -> dict[str, Any]:
    row = (await conn.execute(
        _purchases_with_users().where(purchases.c.id == purchase_id))).first()
    if row is None:
        raise NotFound(f"no purchase {purchase_id!r}")
    items = (await conn.execute(
        select(stock_items.c.id, stock_items.c.value, stock_items.c.state,
               stock_items.c.assigned_at)
        .where(stock_items.c.purchase_id == purchase_id).order_by(stock_items.c.id)
    )).all()
    receipt = (await conn.execute(
        select(receipts).where(receipts.c.purchase_id == purchase_id))).first()
    # Stripe events name the checkout session; PhonePe callbacks the merchant order id,
    # which is the purchase id.
    refs = [r for r in (row.provider_session_id, row.id) if r]
    events = list((await conn.execute(
        select(inbox_events).where(inbox_events.c.object_id.in_(refs))
        .order_by(inbox_events.c.received_at, inbox_events.c.event_id))).all())
    emails = (await conn.execute(
        select(outbox_messages).where(outbox_messages.c.purchase_id == purchase_id)
        .order_by(outbox_messages.c.id))).all()
    return {
        "purchase": _with_user(row, [i.value for i in items if i.state == "assigned"]),
        "ledger": await _ledger(conn, purchase_id),
        "receipt": receipt_view(receipt) if receipt is not None else None,
        "items": [{"id": str(i.id), "value": i.value, "state": i.state,
                   "assigned_at": isoformat(i.assigned_at)} for i in items],
        "provider_session": {
            "session_id": row.provider_session_id,
            "payment_intent": row.provider_payment_intent,
            "checkout_url": row.checkout_url,
            "expires_at": isoformat(row.expires_at),
            "refund_status": row.refund_status,
            "refund_id": row.refund_id,
            "check_attempts": int(row.check_attempts),
            "next_check_at": isoformat(row.next_check_at),
        },
        "webhook_events": [event_view(e) for e in events],
        "emails": [email_view(m) for m in emails],
        "idempotency_keys": await _keys(conn, purchase_id),
    }
