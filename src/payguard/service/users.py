"""Users and their bearer tokens (only a sha256 of each token is stored)."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from payguard import ledger
from payguard.clock import utcnow
from payguard.errors import Conflict, Unauthenticated
from payguard.ids import new_id
from payguard.service.principal import Principal
from payguard.store.schema import users
from payguard.store.uow import Database

__all__ = ["authenticate", "create_user", "hash_token"]


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


async def create_user(conn: AsyncConnection, *, email: str, name: str | None,
                      currency: str) -> dict[str, Any]:
    """Create a user with an empty wallet; the token is returned here and never again."""
    token = "pgu_" + secrets.token_urlsafe(32)
    user_id = new_id("usr")
    now = utcnow()
    existing = await conn.scalar(select(users.c.id).where(users.c.email == email))
    if existing is not None:
        raise Conflict(f"a user with email {email!r} already exists")
    try:
        await conn.execute(insert(users).values(
            id=user_id, email=email, name=name, token_hash=hash_token(token), created_at=now,
        ))
    except IntegrityError as exc:  # a concurrent create with the same email won the race
        raise Conflict(f"a user with email {email!r} already exists") from exc
    await ledger.ensure_wallet(conn, user_id, currency, now)
    return {"id": user_id, "email": email, "name": name, "token": token}


async def authenticate(db: Database, token: str | None, admin_token: str) -> Principal:
    if not token:
        raise Unauthenticated("send Authorization: Bearer <token>")
    if hmac.compare_digest(token.encode(), admin_token.encode()):
        return Principal("admin")
    async with db.read() as uow:
        row = (await uow.conn.execute(
            select(users.c.id, users.c.email, users.c.name)
            .where(users.c.token_hash == hash_token(token))
        )).first()
    if row is None:
        raise Unauthenticated("unknown token")
    return Principal("user", row.id, row.email, row.name)
