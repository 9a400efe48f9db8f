"""Faults ``payguard race`` injects while scenarios run: declared here, scheduled here.

Each fault is one ``FaultSpec`` in ``FAULTS``: its name (the key of ``RaceConfig.faults``),
its command-line option, what it needs, and how it is built. ``FaultSchedule`` runs every
configured fault on its own period for the whole run and logs each injection (when it
happened and when the fault healed), which the liveness report measures recovery from.

Adding a fault: write a class with ``name`` and ``async inject(rng) -> str`` (do it, wait
for the repair the fault itself includes, describe it), add a ``FaultSpec``, and give
``payguard race`` its option in ``cli/race_cmd.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import httpx

from payguard.race.spawner import Cluster, RedisServer
from payguard.race.types import FaultEvent, RaceConfig

__all__ = ["FAULTS", "Fault", "FaultEnv", "FaultSchedule", "FaultSpec", "check_faults"]


class Fault(Protocol):
    name: str

    async def inject(self, rng: random.Random) -> str:
        """Inject once; return after the fault's own repair, with a one-line description."""
        ...


@dataclass
class FaultEnv:
    """What faults act on: the spawned cluster, the harness's own Redis, the database."""

    cluster: Cluster | None
    redis: RedisServer | None
    database_url: str | None
    sim_url: str | None
    sim_api_key: str


class KillInstance:
    """SIGKILL a random instance (in-flight requests die half-way), then restart it."""

    name = "kill"

    def __init__(self, env: FaultEnv) -> None:
        assert env.cluster is not None
        self.cluster = env.cluster

    async def inject(self, rng: random.Random) -> str:
        index = rng.randrange(self.cluster.instances)
        await self.cluster.kill(index)
        await self.cluster.restart(index)
        return f"SIGKILLed instance-{index}"


class RestartRedis:
    """SIGKILL the harness's Redis (no persistence: every lease and counter is lost) and
    start it again on the same port."""

    name = "restart-redis"

    def __init__(self, env: FaultEnv) -> None:
        assert env.redis is not None
        self.redis = env.redis

    async def inject(self, rng: random.Random) -> str:
        await self.redis.restart()
        return f"restarted Redis on port {self.redis.port} (state lost)"


class TerminateBackends:
    """``pg_terminate_backend`` every connection of the service's database: each pooled
    connection breaks on its next use, in or out of a transaction."""

    name = "terminate-pg"

    def __init__(self, env: FaultEnv) -> None:
        assert env.database_url is not None
        self.url = env.database_url.replace("postgresql+asyncpg://", "postgresql://")

    async def inject(self, rng: random.Random) -> str:
        import asyncpg

        conn = await asyncpg.connect(self.url, timeout=10)
        try:
            n = await conn.fetchval(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()")
        finally:
            await conn.close()
        return f"terminated {n} PostgreSQL backends"


class ProviderTimeouts:
    """For ``WINDOW`` seconds the provider answers every call ``STALL`` seconds late, after
    payguard's provider timeout (set to ``PROVIDER_TIMEOUT`` for the run): calls time out,
    yet the provider still carries them out, as a real one may."""

    name = "provider-timeout"
    PROVIDER_TIMEOUT = 1.5
    STALL = 2.5
    WINDOW = 1.0

    def __init__(self, env: FaultEnv) -> None:
        assert env.sim_url is not None
        self.url = env.sim_url.rstrip("/") + "/_faults/stall"
        self.api_key = env.sim_api_key

    async def inject(self, rng: random.Random) -> str:
        async with httpx.AsyncClient(timeout=10) as client:
            reply = await client.post(
                self.url, json={"seconds": self.STALL, "window": self.WINDOW},
                headers={"Authorization": f"Bearer {self.api_key}"})
            reply.raise_for_status()
        await asyncio.sleep(self.WINDOW)
        return f"provider answered {self.STALL:g}s late for {self.WINDOW:g}s"


@dataclass(frozen=True)
class FaultSpec:
    name: str
    option: str
    help: str
    build: Callable[[FaultEnv], Fault]
    #: Why the fault cannot run with this configuration, or None.
    unusable: Callable[[RaceConfig], str | None] = lambda _config: None
    #: Environment for spawned servers while this fault is on.
    server_env: dict[str, str] = field(default_factory=dict)
    #: The harness must start (and may restart) its own Redis for this fault.
    needs_own_redis: bool = False


def _needs_spawn(config: RaceConfig) -> str | None:
    return None if config.spawn else "needs --spawn: the harness must own the processes"


def _needs_postgres(config: RaceConfig) -> str | None:
    if not config.spawn:
        return "needs --spawn"
    if not (config.database_url or "").startswith(("postgresql", "postgres:")):
        return "needs --database-url postgresql://..."
    return None


FAULTS: dict[str, FaultSpec] = {spec.name: spec for spec in (
    FaultSpec("kill", "--kill-every", "SIGKILL and restart a random instance every N seconds.",
              KillInstance, _needs_spawn),
    FaultSpec("restart-redis", "--restart-redis-every",
              "Start a Redis for the run's locks and SIGKILL/restart it every N seconds.",
              RestartRedis, _needs_spawn, needs_own_redis=True),
    FaultSpec("terminate-pg", "--terminate-pg-every",
              "pg_terminate_backend every connection of the service's database every N s.",
              TerminateBackends, _needs_postgres),
    FaultSpec("provider-timeout", "--provider-timeout-every",
              "Every N seconds the provider answers after payguard's timeout for a second.",
              ProviderTimeouts, _needs_spawn,
              server_env={"PAYGUARD_PROVIDER_TIMEOUT": str(ProviderTimeouts.PROVIDER_TIMEOUT)}),
)}


def check_faults(config: RaceConfig) -> None:
    """Raise ``ValueError`` for an unknown fault or one this configuration cannot run."""
    for name, every in config.faults.items():
        spec = FAULTS.get(name)
        if spec is None:
            raise ValueError(f"unknown fault {name!r}; known: {', '.join(FAULTS)}")
        if not every > 0:
            raise ValueError(f"{spec.option} must be a positive number of seconds")
        why = spec.unusable(config)
        if why:
            raise ValueError(f"{spec.option} {why}")


class FaultSchedule:
    """Runs each configured fault every N seconds (first after N) until stopped."""

    def __init__(self, config: RaceConfig, env: FaultEnv, rng: random.Random) -> None:
        self._plan = [(FAULTS[name].build(env), every) for name, every in config.faults.items()]
        self._rng = rng
        self._tasks: list[asyncio.Task[None]] = []
        self.events: list[FaultEvent] = []
        self.errors: list[str] = []
        self.started = time.monotonic()

    def __bool__(self) -> bool:
        return bool(self._plan)

    def last_before(self, moment: float) -> FaultEvent | None:
        """The latest fault injected at or before ``moment`` (monotonic seconds)."""
        best = None
        for event in self.events:
            if self.started + event.at <= moment and (best is None or event.at > best.at):
                best = event
        return best

    def injected_between(self, start: float, end: float) -> FaultEvent | None:
        """The latest fault injected within [start, end] (monotonic seconds), if any."""
        hits = [e for e in self.events if start <= self.started + e.at <= end]
        return max(hits, key=lambda e: e.at) if hits else None

    async def __aenter__(self) -> FaultSchedule:
        self.started = time.monotonic()
        self._tasks = [asyncio.create_task(self._loop(fault, every), name=f"fault:{fault.name}")
                       for fault, every in self._plan]
        return self

    async def __aexit__(self, *exc: object) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _loop(self, fault: Fault, every: float) -> None:
        while True:
            await asyncio.sleep(every)
            at = time.monotonic() - self.started
            try:
                detail = await fault.inject(self._rng)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # report it; a fault that cannot run proves nothing
                self.errors.append(f"{fault.name} at {at:.1f}s failed: {exc}")
                continue
            self.events.append(
                FaultEvent(fault.name, at, time.monotonic() - self.started, detail))
