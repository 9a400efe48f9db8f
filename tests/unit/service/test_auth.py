"""The user-token cache (bounded, each entry trusted for its TTL from the moment of the
database read, droppable per user) and the Authenticator in front of it."""

from __future__ import annotations

import asyncio

import pytest

from payguard.errors import Unauthenticated
from payguard.service.auth import ADMIN, Authenticator, TokenCache, hash_token
from payguard.service.principal import Principal


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def user(n: int) -> Principal:
    return Principal("user", f"usr_{n}", f"u{n}@t.test", None)


def test_entry_expires_ttl_after_the_read_not_after_the_answer() -> None:
    clock = Clock()
    cache = TokenCache(ttl=5.0, max_entries=10, clock=clock)
    read_at = clock.now
    clock.now += 1.0  # the database took a second to answer
    cache.put("a", user(1), read_at=read_at)
    clock.now += 3.999
    assert cache.get("a") == user(1)
    clock.now += 0.001
    assert cache.get("a") is None
    assert len(cache) == 0


def test_an_answer_older_than_the_ttl_is_not_cached() -> None:
    clock = Clock()
    cache = TokenCache(ttl=5.0, max_entries=10, clock=clock)
    cache.put("a", user(1), read_at=clock.now - 5.0)
    assert len(cache) == 0


def test_least_recently_used_goes_first_beyond_the_bound() -> None:
    clock = Clock()
    cache = TokenCache(ttl=60.0, max_entries=3, clock=clock)
    for n in range(3):
        cache.put(f"t{n}", user(n), read_at=clock.now)
    assert cache.get("t0") == user(0)  # t1 is now the least recently used
    cache.put("t3", user(3), read_at=clock.now)
    assert len(cache) == 3
    assert cache.get("t1") is None
    assert [cache.get(f"t{n}") for n in (0, 2, 3)] == [user(0), user(2), user(3)]


def test_forget_user_drops_every_token_of_that_user_only() -> None:
    clock = Clock()
    cache = TokenCache(ttl=60.0, max_entries=10, clock=clock)
    for digest, n in (("old", 1), ("older", 1), ("other", 2)):
        cache.put(digest, user(n), read_at=clock.now)
    cache.forget_user("usr_1")
    assert cache.get("old") is None and cache.get("older") is None
    assert cache.get("other") == user(2)


def test_ttl_zero_disables_the_cache() -> None:
    clock = Clock()
    cache = TokenCache(ttl=0.0, max_entries=10, clock=clock)
    cache.put("a", user(1), read_at=clock.now)
    assert cache.get("a") is None and len(cache) == 0


class FakeUsers:
    """The database behind the Authenticator: token digest -> user, reads counted."""

    def __init__(self) -> None:
        self.by_digest: dict[str, Principal] = {}
        self.reads = 0
        self.gate: asyncio.Event | None = None
        self.read_once = asyncio.Event()

    async def lookup(self, digest: str) -> Principal | None:
        self.reads += 1
        found = self.by_digest.get(digest)  # the row as it is now; the answer may lag
        self.read_once.set()
        if self.gate is not None:
            await self.gate.wait()
        return found


async def test_admin_in_memory_users_read_once_per_ttl_unknown_never_cached() -> None:
    db, clock = FakeUsers(), Clock()
    auth = Authenticator(db.lookup, "adm", TokenCache(ttl=5, max_entries=10, clock=clock))
    assert await auth.authenticate("adm") == ADMIN
    assert db.reads == 0
    db.by_digest[hash_token("tok")] = user(1)
    assert [await auth.authenticate("tok") for _ in range(3)] == [user(1)] * 3
    assert db.reads == 1
    clock.now += 5
    assert await auth.authenticate("tok") == user(1)
    assert db.reads == 2
    for _ in range(2):
        with pytest.raises(Unauthenticated):
            await auth.authenticate("nobody")
    assert db.reads == 4  # a miss is never cached: a new token works at once
    with pytest.raises(Unauthenticated):
        await auth.authenticate(None)


async def test_concurrent_misses_share_one_read() -> None:
    db = FakeUsers()
    db.by_digest[hash_token("tok")] = user(1)
    db.gate = asyncio.Event()
    auth = Authenticator(db.lookup, "adm", TokenCache(ttl=5, max_entries=10))
    waiting = [asyncio.create_task(auth.authenticate("tok")) for _ in range(20)]
    await asyncio.sleep(0)
    db.gate.set()
    assert await asyncio.gather(*waiting) == [user(1)] * 20
    assert db.reads == 1


async def test_a_read_that_raced_a_rotation_is_not_cached() -> None:
    """The lookup read the old token's row just before the rotation committed: its answer
    may go to the requests that were waiting, but it must not outlive the rotation."""
    db = FakeUsers()
    db.by_digest[hash_token("old")] = user(1)
    db.gate = asyncio.Event()
    auth = Authenticator(db.lookup, "adm", TokenCache(ttl=60, max_entries=10))
    racing = asyncio.create_task(auth.authenticate("old"))
    await db.read_once.wait()  # the lookup has read the old row
    del db.by_digest[hash_token("old")]  # the rotation commits ...
    auth.forget_user("usr_1")  # ... and its after-commit hook runs
    db.gate.set()
    assert await racing == user(1)
    db.gate = None
    with pytest.raises(Unauthenticated):
        await auth.authenticate("old")
