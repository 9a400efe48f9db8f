"""Users with their wallet balances, and one user's wallet journal (operator views)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import and_, func, or_, select
from sqlalchemy.ext.asyncio import AsyncConnection

from payguard import ledger
from payguard.clock import isoformat
from payguard.errors import NotFound
from payguard.service.paging import Cursor
from payguard.service.wallets import list_entries
from payguard.store.schema import accounts, purchases, users

__all__ = ["get_user", "list_users", "user_journal"]


def _users_with_wallets(currency: str) -> Any:
    # The wallet id is deterministic, so the join is an equality on the primary key.
    return (
        select(users.c.id, users.c.email, users.c.name, users.c.created_at,
               func.coalesce(accounts.c.balance, 0).label("balance"))
        .select_from(users.outerjoin(accounts, and_(
            accounts.c.owner_id == users.c.id, accounts.c.kind == "wallet",
            accounts.c.currency == currency)))
    )


def _user_view(row: Any, currency: str) -> dict[str, Any]:
    return {"id": row.id, "email": row.email, "name": row.name,
            "created_at": isoformat(row.created_at), "currency": currency,
            "balance": int(row.balance)}


async def list_users(conn: AsyncConnection, currency: str, *, q: str | None, limit: int,
                     cursor: Cursor | None) -> dict[str, Any]:
    """Newest first. ``q``: an exact user id, or a case-insensitive part of email or name."""
    query = _users_with_wallets(currency)
    if q:
        needle = f"%{q.lower()}%"
        query = query.where(or_(users.c.id == q, func.lower(users.c.email).like(needle),
                                func.lower(users.c.name).like(needle)))
    if cursor is not None:
        query = query.where(cursor.older(users.c.created_at, users.c.id))
    rows = (await conn.execute(
        query.order_by(users.c.created_at.desc(), users.c.id.desc()).limit(limit + 1))).all()
    page = rows[:limit]
    counts: dict[str, int] = {}
    if page:
        for row in await conn.execute(
            select(purchases.c.user_id, func.count()).where(
                purchases.c.user_id.in_([r.id for r in page])).group_by(purchases.c.user_id)):
            counts[str(row[0])] = int(row[1])
    return {
        "users": [{**_user_view(r, currency), "purchases": counts.get(r.id, 0)} for r in page],
        "next_cursor": Cursor.after(page[-1].created_at, page[-1].id)
        if len(rows) > limit else None,
    }


async def get_user(conn: AsyncConnection, user_id: str, currency: str) -> dict[str, Any]:
    row = (await conn.execute(
        _users_with_wallets(currency).where(users.c.id == user_id))).first()
    if row is None:
        raise NotFound(f"no user {user_id!r}")
    return _user_view(row, currency)


async def user_journal(conn: AsyncConnection, user_id: str, currency: str, *, limit: int,
                       cursor: int | None) -> dict[str, Any]:
    """The user, and their wallet's journal newest first (the same paging as the user's
    own ``/api/wallet/entries``)."""
    user = await get_user(conn, user_id, currency)
    page = await list_entries(conn, user_id, currency, limit=limit, cursor=cursor)
    return {"user": user, "account_id": ledger.wallet_account_id(user_id, currency), **page}
