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

from payguard.race.api import Api, SetupFailed
from payguard.race.client import EndpointMissing, RaceClient, Recorder
from payguard.race.failover import FailoverTimings, failover_result, run_failover
from payguard.race.pgcluster import PgFailoverPair
from payguard.race.progress import Progress
from payguard.race.scenarios import ORDER, REGISTRY, Context, Scenario
from payguard.race.spawner import Cluster
from payguard.race.types import Invariant, RaceConfig, RaceReport, ScenarioResult, ScenarioStatus

__all__ = ["Target", "run_race", "run_race_async", "run_scenario"]


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
async def _target(config: RaceConfig) -> AsyncIterator[Target]:
    if config.failover_after is not None:
        if not config.spawn or config.database_url:
            raise ValueError("--failover-after needs --spawn and builds its own PostgreSQL "
                             "primary and standby: leave out --database-url")
        pair = PgFailoverPair(synchronous_commit=config.synchronous_commit)
        await pair.start()
        try:
            async with _spawned(config, pair.url) as target:
                target.pair = pair
                target.description += f"; {pair.description}"
                yield target
        finally:
            await asyncio.shield(pair.stop())
        return
    if config.spawn:
        async with _spawned(config, config.database_url) as target:
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
async def _spawned(config: RaceConfig, database_url: str | None) -> AsyncIterator[Target]:
    async with Cluster(
        instances=config.instances, database_url=database_url,
        redis_url=config.redis_url, provider_failure_rate=config.provider_failure_rate,
        duplicate_deliveries=config.duplicate_deliveries,
        extra_env=_fault_env(config) | config.server_env, provider=config.provider,
    ) as cluster:
        yield Target(cluster.urls, cluster.admin_token, cluster.description,
                     cluster.sim_url, cluster.webhook_secret, cluster,
                     callback_auth=_phonepe_auth(config.server_env))


def _fault_env(config: RaceConfig) -> dict[str, str]:
    env: dict[str, str] = {}
    if config.kill_every or config.failover_after is not None:
        # A request killed half-way (or whose claim's COMMIT was lost with the primary)
        # leaves its key claimed; let the retry reclaim it soon.
        env["PAYGUARD_IDEMPOTENCY_LOCK_TIMEOUT"] = "3"
    if config.failover_after is not None:
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
    rng = random.Random(config.seed)
    async with _target(config) as target:
        report = RaceReport(target=target.description)
        faulty = config.kill_every or target.pair is not None
        retry_for = 120.0 if faulty else 20.0
        async with RaceClient(target.urls, target.admin_token, concurrency=config.concurrency,
                              timeout=config.timeout, retry_for=retry_for,
                              record_acks=target.pair is not None) as client:
            await client.load_routes()
            api = Api(client)
            killer = failover = None
            timings = FailoverTimings(started=time.monotonic())
            if config.kill_every and target.cluster is not None:
                killer = asyncio.create_task(
                    _kill_loop(target.cluster, config.kill_every, rng, report))
            if target.pair is not None and config.failover_after is not None:
                failover = asyncio.create_task(run_failover(
                    target.pair, client, after=config.failover_after,
                    lag=config.failover_lag, timings=timings))
            try:
                with Progress(enabled=config.progress) as progress:
                    for name in names:
                        ctx = Context(client=client, api=api, recorder=Recorder(),
                                      requests=config.sizes.get(name, config.requests),
                                      sim_url=target.sim_url,
                                      webhook_secret=target.webhook_secret, rng=rng,
                                      provider=config.provider,
                                      callback_auth=target.callback_auth)
                        report.results.append(
                            await run_scenario(REGISTRY[name], ctx, progress.track))
                if failover is not None and target.pair is not None:
                    if timings.begun:
                        await failover  # promotion and the first write may be to come
                    report.faults.append(timings.describe())
                    report.results.append(await failover_result(
                        target.pair, client, timings, await _audit(api)))
            finally:
                for task in (killer, failover):
                    if task is not None and not task.done():
                        task.cancel()
                        with contextlib.suppress(asyncio.CancelledError):
                            await task
        return report


async def _kill_loop(cluster: Cluster, every: float, rng: random.Random,
                     report: RaceReport) -> None:
    start = time.monotonic()
    while True:
        await asyncio.sleep(every)
        index = rng.randrange(cluster.instances)
        await cluster.kill(index)
        at = time.monotonic() - start
        await cluster.restart(index)
        report.faults.append(
            f"SIGKILLed instance-{index} at {at:.1f}s, healthy again after "
            f"{time.monotonic() - start - at:.1f}s")


async def run_scenario(
    cls: type[Scenario], ctx: Context,
    track: Callable[[str, Callable[[], int]], contextlib.AbstractContextManager[Callable[[], None]]]
    | None = None,
) -> ScenarioResult:
    """setup -> fire -> verify, plus the server's audit; never raises for a server's sake."""
    missing = ctx.client.missing_routes(cls.routes)
    if missing:
        return ScenarioResult(cls.name, ScenarioStatus.SKIPPED,
                              reason=f"server does not offer {', '.join(missing)}")
    scenario = cls(ctx)
    duration = 0.0
    try:
        await scenario.setup()
        tracker = track(cls.name, scenario.planned) if track else contextlib.nullcontext(None)
        with tracker as advance:
            ctx.recorder.on_sample = advance
            started = time.perf_counter()
            await scenario.fire()
            duration = time.perf_counter() - started
        invariants = await scenario.verify()
        invariants.append(await _audit(ctx.api))
    except EndpointMissing as exc:
        return ScenarioResult(cls.name, ScenarioStatus.SKIPPED, reason=str(exc),
                              samples=scenario.samples())
    except SetupFailed as exc:
        return ScenarioResult(cls.name, ScenarioStatus.ERROR, reason=str(exc),
                              samples=scenario.samples(), duration=duration)
    status = (ScenarioStatus.PASSED if all(i.held for i in invariants)
              else ScenarioStatus.BROKEN)
    return ScenarioResult(cls.name, status, invariants, scenario.samples(), duration,
                          receipts=list(scenario.receipts))


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
