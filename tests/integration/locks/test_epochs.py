"""Fencing tokens keep growing when the backend loses its counters: a Redis restarted
without persistence, a local backend in a new process. The epoch comes from the database."""

from __future__ import annotations

import shutil

import pytest

from payguard.locks import LockService
from payguard.locks.epochs import EPOCH_SHIFT, epoch_source, next_epoch
from payguard.locks.local import LocalBackend
from payguard.locks.redis_backend import RedisBackend
from payguard.race.spawner import RedisServer
from payguard.store.uow import Database


async def test_epochs_only_grow(database: Database) -> None:
    assert [await next_epoch(database, "s") for _ in range(3)] == [1, 2, 3]
    assert await next_epoch(database, "other") == 1


async def test_a_new_local_backend_hands_out_larger_tokens(database: Database) -> None:
    tokens = []
    for _ in range(2):  # two process lives of a local backend
        locks = LockService(LocalBackend(epoch_source(database, "local")))
        async with locks.hold("k", ttl=5, wait=0) as lease:
            tokens.append(lease.fencing_token)
        await locks.close()
    assert tokens[0] >> EPOCH_SHIFT == 1 and tokens[1] >> EPOCH_SHIFT == 2
    assert tokens[1] > tokens[0]


@pytest.mark.skipif(shutil.which("redis-server") is None, reason="needs redis-server")
async def test_a_restarted_redis_hands_out_larger_tokens(database: Database) -> None:
    async with RedisServer() as redis:
        backend = RedisBackend(redis.url, prefix="t:", epoch_source=epoch_source(database, "r"))
        locks = LockService(backend)
        try:
            before = []
            for _ in range(5):
                async with locks.hold("k", ttl=5, wait=0) as lease:
                    before.append(lease.fencing_token)
            assert before == sorted(before) and before[0] >> EPOCH_SHIFT == 1
            await redis.restart()  # every counter and the epoch are gone
            async with locks.hold("k", ttl=5, wait=0) as lease:
                after = lease.fencing_token
            # Without the epoch, Redis's counter would start again at 1, below `before`.
            assert after & ((1 << EPOCH_SHIFT) - 1) == 1
            assert after > max(before) and after >> EPOCH_SHIFT == 2
            held = await backend.held()
            assert held == []
        finally:
            await locks.close()
