"""``run_race``: resolve the target, run each scenario (setup, fire, verify, audit), report."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import random
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

from payguard.config import Settings
from payguard.race.api import Api, SetupFailed
from payguard.race.client import EndpointMissing, RaceClient, Recorder
from payguard.race.failover import FailoverTimings, failover_result, run_failover
from payguard.race.faults import FAULTS, FaultEnv, FaultSchedule, check_faults
from payguard.race.liveness import liveness_invariants, recovery_times, wait_for_convergence
from payguard.race.pgcluster import PgFailoverPair
from payguard.race.progress import Progress
from payguard.race.scenarios import ORDER, REGISTRY, Context, Scenario
from payguard.race.spawner import Cluster, RedisServer
from payguard.race.types import (
    FaultEvent,
    Invariant,
    Liveness,
    RaceConfig,
    RaceReport,
    ScenarioResult,
    ScenarioStatus,
)

__all__ = ["Target", "run_race", "run_race_async", "run_scenario"]

# Spawned servers drop every PAYGUARD_* variable, so their provider key is the default.
_SIM_API_KEY = str(Settings.model_fields["stripe_api_key"].default)


@dataclass
class Target:
    urls: list[str]
    admin_token: str
    description: str
    sim_url: str | None
    webhook_secret: str | None
    cluster: Cluster | None = None
    callback_auth: str | None = None
    pair: PgFailoverPair | None = None


def run_race(config: RaceConfig) -> RaceReport:
    """Run the configured scenarios and return the report (blocking)."""
    return asyncio.run(run_race_async(config))


@contextlib.asynccontextmanager
async def _target(config: RaceConfig, redis_url: str | None) -> AsyncIterator[Target]:
    if config.failover_after is not None:
        if not config.spawn or config.database_url:
            raise ValueError("--failover-after needs --spawn and builds its own PostgreSQL "
                             "primary and standby: leave out --database-url")
        pair = PgFailoverPair(synchronous_commit=config.synchronous_commit)
        await pair.start()
        try:
            async with _spawned(config, pair.url, redis_url) as target:
                target.pair = pair
                target.description += f"; {pair.description}"
                yield target
        finally:
            await asyncio.shield(pair.stop())
        return
    if config.spawn:
        async with _spawned(config, config.database_url, redis_url) as target:
            yield target
        return
    if not config.url or not config.admin_token:
        raise ValueError("give --url and --admin-token, or --spawn")
    urls = [u.strip().rstrip("/") for u in config.url.split(",") if u.strip()]
    sim = "/sim/phonepe" if config.provider == "phonepe" else "/sim"
    yield Target(urls, config.admin_token, ", ".join(urls),
                 config.sim_url or f"{urls[0]}{sim}", config.webhook_secret,
                 callback_auth=_phonepe_auth(dict(os.environ)))


def _phonepe_auth(env: dict[str, str]) -> str:
    """PhonePe's callback ``Authorization`` for the service's (or the simulator's default)
    callback username and password."""
    from payguard.config import SIM_PHONEPE_CALLBACK_PASSWORD, SIM_PHONEPE_CALLBACK_USERNAME

    user = env.get("PAYGUARD_PHONEPE_CALLBACK_USERNAME", SIM_PHONEPE_CALLBACK_USERNAME)
    password = env.get("PAYGUARD_PHONEPE_CALLBACK_PASSWORD", SIM_PHONEPE_CALLBACK_PASSWORD)
    return hashlib.sha256(f"{user}:{password}".encode()).hexdigest()


@contextlib.asynccontextmanager
async def _spawned(config: RaceConfig, database_url: str | None,
                   redis_url: str | None) -> AsyncIterator[Target]:
    async with Cluster(
        instances=config.instances, database_url=database_url,
        redis_url=redis_url, provider_failure_rate=config.provider_failure_rate,
        duplicate_deliveries=config.duplicate_deliveries,
        extra_env=_fault_env(config) | config.server_env, provider=config.provider,
    ) as cluster:
        yield Target(cluster.urls, cluster.admin_token, cluster.description,
                     cluster.sim_url, cluster.webhook_secret, cluster,
                     callback_auth=_phonepe_auth(config.server_env))


def _fault_env(config: RaceConfig) -> dict[str, str]:
    """What spawned servers need for the configured faults. Never the liveness knobs
    (holder lease, lock timeout) for the faults of ``race/faults.py``: recovery is
    measured with the defaults."""
    env: dict[str, str] = {}
    for name in config.faults:
        env.update(FAULTS[name].server_env)
    if config.failover_after is not None:
        # A claim whose COMMIT was lost with the primary leaves its key claimed; let the
        # retry reclaim it soon.
        env["PAYGUARD_IDEMPOTENCY_LOCK_TIMEOUT"] = "3"
        env["PAYGUARD_DB_SYNCHRONOUS_COMMIT"] = config.synchronous_commit
    return env


def _scenario_names(config: RaceConfig) -> list[str]:
    names = config.scenarios or list(ORDER)
    unknown = [n for n in names if n not in REGISTRY]
    if unknown:
        raise ValueError(f"unknown scenario(s) {unknown}; known: {', '.join(ORDER)}")
    return names


async def run_race_async(config: RaceConfig) -> RaceReport:
    names = _scenario_names(config)
    check_faults(config)
    rng = random.Random(config.seed)
    async with contextlib.AsyncExitStack() as stack:
        redis = None
        redis_url = config.redis_url
        if any(FAULTS[name].needs_own_redis for name in config.faults):
            redis = await stack.enter_async_context(RedisServer())
            redis_url = redis.url
        target = await stack.enter_async_context(_target(config, redis_url))
        report = RaceReport(target=target.description)
        client = await stack.enter_async_context(RaceClient(
            target.urls, target.admin_token, concurrency=config.concurrency,
            timeout=config.timeout, retry_for=config.retry_for,
            record_acks=target.pair is not None))
        await client.load_routes()
        api = Api(client)
        env = FaultEnv(cluster=target.cluster, redis=redis, database_url=config.database_url,
                       sim_url=target.sim_url, sim_api_key=_SIM_API_KEY)
        schedule = await stack.enter_async_context(FaultSchedule(config, env, rng))
        failover = None
        timings = FailoverTimings(started=time.monotonic())
        if target.pair is not None and config.failover_after is not None:
            def healed(t: FailoverTimings) -> None:
                # Into the fault log, so liveness measures recovery from the failover too.
                assert t.killed is not None and t.first_write is not None
                schedule.events.append(FaultEvent(
                    "failover", t.killed - schedule.started, t.first_write - schedule.started,
                    "SIGKILLed the PostgreSQL primary, promoted the standby"))

            failover = asyncio.create_task(run_failover(
                target.pair, client, after=config.failover_after,
                lag=config.failover_lag, timings=timings, healed=healed))
        try:
            with Progress(enabled=config.progress) as progress:
                for name in names:
                    ctx = Context(client=client, api=api, recorder=Recorder(),
                                  requests=config.sizes.get(name, config.requests),
                                  sim_url=target.sim_url,
                                  webhook_secret=target.webhook_secret, rng=rng,
                                  provider=config.provider,
                                  callback_auth=target.callback_auth)
                    report.results.append(await run_scenario(
                        REGISTRY[name], ctx, progress.track, schedule=schedule,
                        converge_within=config.converge_within))
            if failover is not None and target.pair is not None:
                if timings.begun:
                    await failover  # promotion and the first write may be to come
                report.notes.append(timings.describe())
                report.results.append(await failover_result(
                    target.pair, client, timings, await _audit(api)))
        finally:
            if failover is not None and not failover.done():
                failover.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await failover
        report.faults = list(schedule.events)
        report.fault_errors = list(schedule.errors)
        return report


async def run_scenario(
    cls: type[Scenario], ctx: Context,
    track: Callable[[str, Callable[[], int]], contextlib.AbstractContextManager[Callable[[], None]]]
    | None = None, *, schedule: FaultSchedule | None = None, converge_within: float = 60.0,
) -> ScenarioResult:
    """setup -> fire (audited as it runs) -> converge -> verify, plus the server's audit;
    never raises for a server's sake."""
    missing = ctx.client.missing_routes(cls.routes)
    if missing:
        return ScenarioResult(cls.name, ScenarioStatus.SKIPPED,
                              reason=f"server does not offer {', '.join(missing)}")
    scenario = cls(ctx)
    duration = 0.0
    live = Liveness()
    try:
        await scenario.setup()
        tracker = track(cls.name, scenario.planned) if track else contextlib.nullcontext(None)
        with tracker as advance:
            ctx.recorder.on_sample = advance
            started = time.perf_counter()
            async with _AuditSampler(ctx.client) as sampler:
                await scenario.fire()
            fired_at = time.monotonic()
            duration = time.perf_counter() - started
        conv = await wait_for_convergence(ctx.client, converge_within)
        invariants = await scenario.verify()
        invariants.append(sampler.invariant())
        invariants.append(await _audit(ctx.api))
    except EndpointMissing as exc:
        return ScenarioResult(cls.name, ScenarioStatus.SKIPPED, reason=str(exc),
                              samples=scenario.samples())
    except SetupFailed as exc:
        return ScenarioResult(cls.name, ScenarioStatus.ERROR, reason=str(exc),
                              samples=scenario.samples(), duration=duration)
    samples = scenario.samples()
    live.unfinished = sum(1 for s in samples if not s.finished)
    live.converged = conv.quiet
    live.converge_detail = conv.detail
    live.recovery = recovery_times(samples, schedule)
    last = schedule.last_before(fired_at) if schedule else None
    if last is not None and conv.quiet and schedule is not None:
        live.settle = conv.at - (schedule.started + last.at)
    invariants.extend(liveness_invariants(samples, conv, live, converge_within))
    status = (ScenarioStatus.PASSED if all(i.held for i in invariants)
              else ScenarioStatus.BROKEN)
    return ScenarioResult(cls.name, status, invariants, samples, duration,
                          receipts=list(scenario.receipts), liveness=live)


class _AuditSampler:
    """Reads ``GET /api/admin/audit`` about once a second while a storm runs: safety must
    hold at every moment the harness can observe, not only at the end."""

    INTERVAL = 1.0

    def __init__(self, client: RaceClient) -> None:
        self.client = client
        self.seen = 0
        self.problems: list[str] = []
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> _AuditSampler:
        self._task = asyncio.create_task(self._loop())
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.INTERVAL)
            try:
                reply = await self.client.request("GET", "/api/admin/audit", retry=False)
            except EndpointMissing:
                return
            body = reply.body
            if reply.status != 200 or not isinstance(body, dict):
                continue  # not observed (an instance down): nothing to conclude
            self.seen += 1
            if body.get("ok") is not True:
                self.problems.extend(
                    f"{p.get('kind')}: {p.get('detail')}" for p in body.get("problems") or []
                    if isinstance(p, dict))

    def invariant(self) -> Invariant:
        if self.problems:
            return Invariant("server audit ok during the storm", False,
                             "; ".join(sorted(set(self.problems))[:5]))
        return Invariant("server audit ok during the storm", True,
                         f"{self.seen} audits while requests raced, all ok")


async def _audit(api: Api) -> Invariant:
    try:
        audit = await api.audit()
    except (EndpointMissing, SetupFailed) as exc:
        return Invariant("server audit ok", False, f"audit unavailable: {exc}")
    problems = audit.get("problems") or []
    held = audit.get("ok") is True and not problems
    shown = "; ".join(f"{p.get('kind')}: {p.get('detail')}" for p in problems[:5]
                      if isinstance(p, dict))
    return Invariant("server audit ok", held,
                     f"ok={audit.get('ok')}, {audit.get('wallets_checked')} wallets checked"
                     + (f", problems: {shown}" if problems else ", no problems"))
