"""The webhook inbox as the operator sees it: each event id once, with what it did and
how many times it was delivered.

Categories (the ``state`` filter), from the recorded outcome:
- ``applied``: the event changed a purchase (completed, expired, refunded on arrival);
- ``failed``: the event reported a failed payment, and the purchase was closed as failed;
- ``received``: recorded, nothing to do (ignored type, unknown session, still awaiting
  payment, already closed or completed by another path), or acknowledged and not applied
  yet (outcome ``pending``: on its way, or waiting for a retry after a failed apply);
- ``duplicate``: delivered more than once (any of the above; ``deliveries > 1``).

An event whose apply failed stays ``pending`` and is retried by the inbox applier; they
show in ``/metrics`` as ``payguard_inbox_pending`` and ``outcome="apply_failed"``.
"""

from __future__ import annotations

from typing import Any, Literal

from sqlalchemy import case, func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from payguard.clock import isoformat
from payguard.service.paging import Cursor
from payguard.store.schema import inbox_events

__all__ = ["APPLIED", "FAILED", "InboxState", "event_view", "inbox_counts", "list_events"]

InboxState = Literal["applied", "received", "duplicate", "failed"]
APPLIED = frozenset({"completed", "expired", "refund"})
FAILED = frozenset({"failed"})


def category(outcome: str) -> str:
    if outcome in APPLIED:
        return "applied"
    if outcome in FAILED:
        return "failed"
    return "received"


def event_view(row: Any) -> dict[str, Any]:
    deliveries = int(row.deliveries)
    return {
        "provider": row.provider, "event_id": row.event_id, "type": row.type,
        "object_id": row.object_id, "outcome": row.outcome, "category": category(row.outcome),
        "deliveries": deliveries, "duplicate": deliveries > 1,
        "received_at": isoformat(row.received_at),
        "last_received_at": isoformat(row.last_received_at),
    }


def _state_filter(state: InboxState) -> Any:
    ie = inbox_events
    if state == "duplicate":
        return ie.c.deliveries > 1
    if state == "applied":
        return ie.c.outcome.in_(sorted(APPLIED))
    if state == "failed":
        return ie.c.outcome.in_(sorted(FAILED))
    return ie.c.outcome.not_in(sorted(APPLIED | FAILED))


async def list_events(conn: AsyncConnection, *, state: InboxState | None, limit: int,
                      cursor: Cursor | None) -> dict[str, Any]:
    """Newest first; ``next_cursor`` continues below the last row."""
    ie = inbox_events
    query = select(ie)
    if state is not None:
        query = query.where(_state_filter(state))
    if cursor is not None:
        query = query.where(cursor.older(ie.c.received_at, ie.c.event_id))
    query = query.order_by(ie.c.received_at.desc(), ie.c.event_id.desc()).limit(limit + 1)
    rows = (await conn.execute(query)).all()
    page = rows[:limit]
    return {
        "events": [event_view(r) for r in page],
        "next_cursor": Cursor.after(page[-1].received_at, page[-1].event_id)
        if len(rows) > limit else None,
        "counts": await inbox_counts(conn),
    }


async def inbox_counts(conn: AsyncConnection) -> dict[str, int]:
    """Events per category and deliveries in all (one aggregate scan)."""
    ie = inbox_events

    def count_if(cond: Any) -> Any:
        return func.coalesce(func.sum(case((cond, 1), else_=0)), 0)

    row = (await conn.execute(select(
        func.count().label("events"),
        func.coalesce(func.sum(ie.c.deliveries), 0).label("deliveries"),
        count_if(_state_filter("applied")).label("applied"),
        count_if(_state_filter("failed")).label("failed"),
        count_if(_state_filter("received")).label("received"),
        count_if(_state_filter("duplicate")).label("duplicate"),
    ))).one()
    return {name: int(getattr(row, name)) for name in
            ("events", "deliveries", "applied", "failed", "received", "duplicate")}
