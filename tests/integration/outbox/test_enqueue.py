"""enqueue: one row per dedupe key, whatever the concurrency; nothing without a commit."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from payguard.outbox import enqueue
from payguard.store.uow import Database
from tests.support.db import uncommitted

from .helpers import enqueue_raced, outbox_rows


async def test_ten_concurrent_enqueues_of_one_key_make_one_row(
        database: Database, peer_databases: list[Database]) -> None:
    results = await enqueue_raced([database, *peer_databases], "purchase:p1", times=10)
    assert sorted(results) == [False] * 9 + [True]
    rows = await outbox_rows(database)
    assert len(rows) == 1
    row = rows[0]
    assert (row["dedupe_key"], row["state"], row["attempts"], row["claimed_until"]) == (
        "purchase:p1", "pending", 0, None)


async def test_distinct_keys_raced_each_make_one_row(database: Database) -> None:
    results = await asyncio.gather(*(enqueue_raced([database], f"k{i}", times=10)
                                     for i in range(4)))
    assert [sum(r) for r in results] == [1, 1, 1, 1]
    assert sorted(r["dedupe_key"] for r in await outbox_rows(database)) == [
        "k0", "k1", "k2", "k3"]


async def test_enqueue_never_commits(database: Database) -> None:
    async with uncommitted(database) as uow:
        assert await enqueue(uow.conn, dedupe_key="k", kind="x", recipient="a@b.example",
                             subject="s", body="b") is True
        # Same transaction, same key: the constraint answers, not a prior read.
        assert await enqueue(uow.conn, dedupe_key="k", kind="x", recipient="a@b.example",
                             subject="s", body="b") is False
    # Left without commit: rolled back with the business change it belonged to.
    assert await outbox_rows(database) == []


@pytest.mark.parametrize("kwargs", [
    {"dedupe_key": ""},
    {"dedupe_key": "k" * 201},
    {"recipient": "not-an-address"},
    {"recipient": "a@b.example\r\nBcc: evil@example.com"},
    {"subject": "hello\nBcc: evil@example.com"},
])
async def test_enqueue_refuses_bad_messages(database: Database, kwargs: dict[str, str]) -> None:
    values: dict[str, Any] = {"dedupe_key": "k", "kind": "x", "recipient": "a@b.example",
                              "subject": "s", "body": "b", **kwargs}
    async with uncommitted(database) as uow:
        with pytest.raises(ValueError):
            await enqueue(uow.conn, **values)
