"""Losing the PostgreSQL primary: a throwaway primary + synchronous standby per test.

1. The harness's ``--failover-after`` at a small size: every scenario and the failover
   checks hold (every 2xx write on the promoted server exactly once, instances follow it).
2. The same failover driven step by step, with two instances on one database: one with
   ``synchronous_commit=on``, one with ``off`` on purpose. While the standby is cut off,
   the ``off`` instance acknowledges purchases the standby never gets, and the check must
   catch exactly those; the ``on`` instance's batch stuck in COMMIT when the primary dies
   is answered 503 ``COMMIT_OUTCOME_UNKNOWN``, the purchases queued behind it 503
   ``DATABASE_UNAVAILABLE``, and the same keys retried after promotion apply each purchase
   exactly once. During the outage every answer is a
   503 with ``Retry-After``, never a 500 and never a hang.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import asyncpg
import pytest

from payguard.race import RaceConfig, ScenarioStatus, run_race_async
from payguard.race.api import Api
from payguard.race.client import RaceClient, Reply, new_key
from payguard.race.durability import check_acks
from payguard.race.pgcluster import PgFailoverPair, pg_bindir
from payguard.race.spawner import Cluster
from tests.support.services import unavailable

PRICE = 100
OUTAGE_LIMIT = 15.0  # seconds an answer may take while no server is writable


@pytest.fixture
async def pair() -> AsyncIterator[PgFailoverPair]:
    try:
        bindir = pg_bindir()
    except Exception as exc:
        unavailable("PostgreSQL server binaries", str(exc))
    if os.geteuid() == 0 and shutil.which("runuser") is None:
        unavailable("runuser", "needed to run initdb as postgres")
    pg_pair = PgFailoverPair(bindir=bindir)
    await pg_pair.start()
    try:
        yield pg_pair
    finally:
        await pg_pair.stop()


async def test_race_failover_keeps_every_acknowledged_write() -> None:
    try:
        pg_bindir()
    except Exception as exc:
        unavailable("PostgreSQL server binaries", str(exc))
    report = await run_race_async(RaceConfig(
        scenarios=["receipts", "wallet"], spawn=True, instances=2,
        # Sized so the storm outlasts the kill on an idle machine too (a faster write path
        # must not let it finish first: "mid-run" needs writes on both sides of the fault).
        sizes={"receipts": 200, "wallet": 120}, failover_after=1.0, failover_lag=0.5,
        progress=False, concurrency=20, seed=3,
    ))
    results = {r.name: r for r in report.results}
    problems = {r.name: [f"{i.name}: {i.evidence}" for i in r.broken] or r.reason
                for r in report.results if r.status is not ScenarioStatus.PASSED}
    assert not problems, (problems, report.faults)
    failover = results["failover"]
    names = [i.name for i in failover.invariants]
    assert names == ["primary killed mid-run, standby promoted",
                     "a write succeeded after the promotion",
                     "every 2xx write is on the promoted server, exactly once",
                     "every instance writes to the promoted server", "server audit ok"]
    assert " 0 lost, 0 twice, 0 answered differently" in failover.invariants[2].evidence
    assert report.ok


async def _wait_for(what: str, probe: Callable[[], Awaitable[bool]],
                    within: float = 30.0, port: int | None = None) -> None:
    deadline = time.monotonic() + within
    while not await probe():
        if time.monotonic() >= deadline:
            activity = await _activity(port) if port else ""
            raise AssertionError(f"timed out waiting for {what}\n{activity}")
        await asyncio.sleep(0.05)


async def _activity(port: int) -> str:
    conn = await asyncpg.connect(host="127.0.0.1", port=port, user="postgres",
                                 database="payguard", timeout=5)
    try:
        rows = await conn.fetch("SELECT pid, state, wait_event_type, wait_event, "
                                "left(query, 80) AS q FROM pg_stat_activity")
    finally:
        await conn.close()
    return "\n".join(str(dict(r)) for r in rows)


async def _fetchval(port: int, sql: str) -> object:
    conn = await asyncpg.connect(host="127.0.0.1", port=port, user="postgres",
                                 database="payguard", timeout=5)
    try:
        return await conn.fetchval(sql)
    finally:
        await conn.close()


def _is_503(reply: Reply) -> bool:
    return reply.status == 503 and reply.headers.get("retry-after", "").isdigit()


async def test_sync_commit_survives_failover_and_async_commit_is_caught_losing(
    pair: PgFailoverPair,
) -> None:
    base = {"PAYGUARD_IDEMPOTENCY_LOCK_TIMEOUT": "30", "PAYGUARD_RECONCILE_INTERVAL": "0"}
    hold = 2.5
    sync_on = Cluster(database_url=pair.url, extra_env=base | {
        "PAYGUARD_DB_SYNCHRONOUS_COMMIT": "on", "PAYGUARD_TEST_HOLD_SECONDS": str(hold)})
    sync_off = Cluster(database_url=pair.url, extra_env=base | {
        "PAYGUARD_DB_SYNCHRONOUS_COMMIT": "off"})
    try:
        await asyncio.gather(sync_on.start(), sync_off.start())
        await _sync_then_async(pair, sync_on, sync_off, hold)
    finally:
        await asyncio.gather(sync_on.stop(), sync_off.stop())


async def _sync_then_async(pair: PgFailoverPair, sync_on: Cluster, sync_off: Cluster,
                           hold: float) -> None:
    off = RaceClient(sync_off.urls, sync_off.admin_token, record_acks=True)
    on = RaceClient(sync_on.urls, sync_on.admin_token)
    async with off, on:
        api = Api(off)
        # One user and product per purchaser (the platform revenue row stays shared).
        buyers = [(await api.user(balance=10 * PRICE), await api.product(PRICE, items=5))
                  for _ in range(5)]
        # Everything so far must be on the standby before it is cut off.
        await _wait_for("the standby to replay the setup", lambda: _caught_up(pair))

        async def buy(client: RaceClient, key: str, n: int, *, retry: bool = True
                      ) -> Reply:
            user, product = buyers[n]
            return await client.request("POST", "/api/purchases", token=user.token,
                                        key=key, json_body={"product_id": product["id"]},
                                        retry=retry)

        # Synchronous instance, group commit: the first purchase's batch claims its key and
        # is held open (uncommitted) before its effects; the replication is cut meanwhile.
        on_keys = [new_key() for _ in range(3)]
        on_first = [asyncio.create_task(buy(on, on_keys[0], 0, retry=False))]
        held_batch = ("SELECT {} FROM pg_stat_activity WHERE state = 'idle in transaction' "
                      "AND query LIKE '%idempotency_keys%'")
        await _wait_for("the first batch to be held open", lambda: _count(
            pair.primary_port, held_batch.format("count(*)"), 1))
        held = await _fetchval(pair.primary_port, held_batch.format("pid"))
        assert isinstance(held, int)
        await pair.stall_replication()
        # Asynchronous instance: acknowledged at once, never replicated. (They finish while
        # the held batch has not yet touched the shared revenue row.)
        off_replies = [await buy(off, new_key(), 3) for _ in range(4)]
        assert [r.status for r in off_replies] == [201] * 4
        # Three more synchronous purchases queue in that instance's writer behind the held
        # batch, which applies its purchase and then waits in COMMIT for the standby.
        on_first += [asyncio.create_task(buy(on, k, n, retry=False))
                     for n, k in enumerate(on_keys) if n > 0]
        late_key = new_key()
        late = asyncio.create_task(buy(on, late_key, 4, retry=False))
        # (Its own backend: the holder heartbeat's commits wait for the standby too.)
        await _wait_for("the held batch's commit waiting for the standby", lambda: _count(
            pair.primary_port, "SELECT count(*) FROM pg_stat_activity "
            f"WHERE wait_event = 'SyncRep' AND pid = {held}", 1),
            within=hold + 30, port=pair.primary_port)
        assert not any(t.done() for t in [*on_first, late])
        await pair.kill_primary()

        # The outage: 503 with Retry-After, never a 500, never a hang. The purchase whose
        # batch's COMMIT was in flight cannot know its outcome; the three queued behind it
        # never reached the database and know nothing was applied.
        first = await asyncio.wait_for(asyncio.gather(*on_first, late), OUTAGE_LIMIT)
        assert [(r.status, r.code) for r in first] == [
            (503, "COMMIT_OUTCOME_UNKNOWN"), (503, "DATABASE_UNAVAILABLE"),
            (503, "DATABASE_UNAVAILABLE"), (503, "DATABASE_UNAVAILABLE")], \
            [r.raw for r in first]
        assert all(_is_503(r) for r in first)
        started = time.monotonic()
        during = await on.request("GET", "/api/wallet", token=buyers[0][0].token,
                                  retry=False)
        health = await on.request("GET", "/healthz", retry=False)
        assert time.monotonic() - started < OUTAGE_LIMIT
        assert _is_503(during) and during.code == "DATABASE_UNAVAILABLE", during.raw
        assert health.status == 503 and health.body["database"] == "down"

        await pair.promote()
        # The same keys again: each purchase applies exactly once on the new primary.
        retried = RaceClient(sync_on.urls, sync_on.admin_token, retry_for=60.0)
        async with retried:
            again = await asyncio.gather(*(buy(retried, k, n) for n, k in
                                           [*enumerate(on_keys), (4, late_key)]))
            assert [r.status for r in again] == [201] * 4, [r.raw for r in again]
            health = await retried.request("GET", "/healthz", retry=False)
            assert health.body["database_server"] == f"127.0.0.1:{pair.standby_port}"
            assert health.body["database_writable"] is True
            balances = [await Api(retried).balance(u) for u, _ in buyers]
            audit = await Api(retried).audit()
        # Each synchronous purchase applied once; the asynchronous ones are gone.
        assert balances == [9 * PRICE] * 3 + [10 * PRICE, 9 * PRICE]
        assert audit["ok"] is True, audit

        # The asynchronous instance's four acknowledged purchases are gone, and the
        # check says so: their keys, purchases and receipt numbers.
        promoted = pair.server_url(pair.standby_port)
        checked = await check_acks(promoted, off.acks or [])
        off_keys = {a.key for a in (off.acks or []) if a.path == "/api/purchases"}
        assert len(off_keys) == 4
        lost_keys = {line.split("(key ")[1].split(")")[0] for line in checked.lost
                     if "(key " in line}
        assert lost_keys == off_keys, checked.lost
        assert not checked.ok
        assert checked.invariant().held is False


async def _caught_up(pair: PgFailoverPair) -> bool:
    lag = await _fetchval(pair.primary_port, "SELECT count(*) FROM pg_stat_replication "
                          "WHERE replay_lsn = pg_current_wal_lsn()")
    return lag == 1


async def _all(*checks: Awaitable[bool]) -> bool:
    return all([await check for check in checks])


async def _count(port: int, sql: str, want: int) -> bool:
    found = await _fetchval(port, sql)
    assert isinstance(found, int)
    return found >= want
