"""Spawned servers never outlive the harness, even when it is cancelled (Ctrl-C)."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from payguard.race.spawner import Cluster


async def test_cancelled_run_stops_its_servers() -> None:
    started = asyncio.Event()
    clusters: list[Cluster] = []

    async def run() -> None:
        async with Cluster() as cluster:
            clusters.append(cluster)
            started.set()
            await asyncio.sleep(3600)

    task = asyncio.create_task(run())
    await asyncio.wait_for(started.wait(), 60)
    [cluster] = clusters
    async with httpx.AsyncClient() as client:
        health = await client.get(f"{cluster.urls[0]}/healthz")
    assert health.status_code == 200
    # asyncio.run turns Ctrl-C into exactly this: the main task is cancelled.
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    popen = cluster.servers[0].popen
    assert popen is not None and popen.poll() is not None, "server still running"


def test_several_instances_need_postgresql() -> None:
    with pytest.raises(ValueError, match="postgresql"):
        Cluster(instances=3)
