"""Who is calling: the admin token compared in memory, user tokens through a small cache.

A user token is resolved from the database once and then served from a bounded
in-process cache for ``ttl`` seconds (``PAYGUARD_TOKEN_CACHE_TTL``). That is the price of
not reading the users table on every request: after a token is rotated, another
instance (or worker) may accept the old token until its cached entry is ``ttl`` old,
counted from the moment the database was read, not from when the answer arrived. The
instance that rotates drops the user's entries at once. Only sha256 digests are kept,
never the tokens themselves, and unknown tokens are not cached (they go to the database
every time, so a token created a moment ago is never refused from a stale miss).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable

from payguard.errors import Unauthenticated
from payguard.service.principal import Principal

__all__ = ["ADMIN", "Authenticator", "TokenCache", "TokenLookup", "hash_token"]

ADMIN = Principal("admin")

#: Reads the user holding a token digest from the database (None: nobody holds it).
TokenLookup = Callable[[str], Awaitable[Principal | None]]


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class TokenCache:
    """Token digest -> Principal, least recently used evicted beyond ``max_entries``,
    each entry trusted for ``ttl`` seconds after it was read from the database."""

    def __init__(self, *, ttl: float, max_entries: int,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl = ttl
        self.max_entries = max_entries
        self.clock = clock
        self._entries: OrderedDict[str, tuple[float, Principal]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, digest: str) -> Principal | None:
        entry = self._entries.get(digest)
        if entry is None:
            return None
        expires, principal = entry
        if expires <= self.clock():
            del self._entries[digest]
            return None
        self._entries.move_to_end(digest)
        return principal

    def put(self, digest: str, principal: Principal, *, read_at: float) -> None:
        """Cache what the database said at ``read_at`` (a ``clock()`` reading taken before
        the read was sent), trusted until ``read_at + ttl``."""
        if self.ttl <= 0 or self.max_entries <= 0:
            return
        expires = read_at + self.ttl
        if expires <= self.clock():
            return
        self._entries[digest] = (expires, principal)
        self._entries.move_to_end(digest)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    def forget_user(self, user_id: str) -> None:
        stale = [d for d, (_, p) in self._entries.items() if p.user_id == user_id]
        for digest in stale:
            del self._entries[digest]


class Authenticator:
    """Resolves a bearer token to a Principal (admin, or a user) or raises 401."""

    def __init__(self, lookup: TokenLookup, admin_token: str, cache: TokenCache) -> None:
        self._lookup = lookup
        self._admin = admin_token.encode()
        self.cache = cache
        self._inflight: dict[str, asyncio.Future[Principal | None]] = {}
        # Bumped by every forget_user: a lookup that started before a rotation must not
        # cache what it read (it may be the old token's row, read just before the commit).
        self._generation = 0

    async def authenticate(self, token: str | None) -> Principal:
        if not token:
            raise Unauthenticated("send Authorization: Bearer <token>")
        # Constant time, in memory: the admin token never costs a database read.
        if hmac.compare_digest(token.encode(), self._admin):
            return ADMIN
        digest = hash_token(token)
        principal = self.cache.get(digest)
        if principal is None:
            principal = await self._resolve(digest)
            if principal is None:
                raise Unauthenticated("unknown token")
        return principal

    async def _resolve(self, digest: str) -> Principal | None:
        """One database read per token at a time: when an entry expires under load, the
        concurrent requests carrying that token wait for the same read."""
        pending = self._inflight.get(digest)
        if pending is not None:
            return await asyncio.shield(pending)
        read_at = self.cache.clock()
        generation = self._generation
        pending = asyncio.ensure_future(self._lookup(digest))
        self._inflight[digest] = pending
        try:
            principal = await asyncio.shield(pending)
        finally:
            del self._inflight[digest]
        if principal is not None and generation == self._generation:
            self.cache.put(digest, principal, read_at=read_at)
        return principal

    def forget_user(self, user_id: str) -> None:
        """This instance stops accepting the user's cached tokens now (after a rotation)."""
        self._generation += 1
        self.cache.forget_user(user_id)
