"""Users and their bearer tokens (only a sha256 of each token is stored)."""

from __future__ import annotations

import secrets
from typing import Any

from sqlalchemy import bindparam, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from payguard import ledger
from payguard.clock import utcnow
from payguard.errors import Conflict, NotFound
from payguard.ids import new_id
from payguard.service.auth import hash_token
from payguard.service.principal import Principal
from payguard.store.reads import HotRead
from payguard.store.schema import users
from payguard.store.uow import Database

__all__ = ["create_user", "find_by_token_digest", "hash_token", "new_token", "rotate_token"]


def new_token() -> str:
    return "pgu_" + secrets.token_urlsafe(32)


async def create_user(conn: AsyncConnection, *, email: str, name: str | None,
                      currency: str) -> dict[str, Any]:
    """Create a user with an empty wallet; the token is returned here and never again."""
    token = new_token()
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


_BY_TOKEN_DIGEST = HotRead(select(users.c.id, users.c.email, users.c.name)
                           .where(users.c.token_hash == bindparam("digest")))


async def find_by_token_digest(db: Database, digest: str) -> Principal | None:
    """The user whose token hashes to ``digest``, or None (``service.auth`` caches it).
    One indexed read on the driver, outside any transaction."""
    row = await db.hot.fetch_one(_BY_TOKEN_DIGEST, digest=digest)
    return None if row is None else Principal("user", row.id, row.email, row.name)


async def rotate_token(conn: AsyncConnection, user_id: str) -> str:
    """Give the user a new token in the caller's transaction; the old one stops matching
    at commit. Returns the new token, which exists nowhere else (only its hash is kept)."""
    token = new_token()
    updated = (await conn.execute(
        update(users).where(users.c.id == user_id).values(token_hash=hash_token(token))
        .returning(users.c.id)
    )).scalar_one_or_none()
    if updated is None:
        raise NotFound(f"no user {user_id}")
    return token
