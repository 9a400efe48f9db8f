"""Shared helpers for the bench scripts: throwaway databases, spawned processes, seeding,
a request driver that records latencies, interleaved baseline/subject rounds, Rich tables.

bench/ is a set of scripts, not a package, and must not import from tests/: the spawner
here is a small copy of the idea in tests/support/server.py.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import httpx
from rich.console import Console
from rich.table import Table

from payguard.config import Settings, to_async_url
from payguard.service import catalog, users, wallets
from payguard.store.engine import create_engine
from payguard.store.migrate import migrate
from payguard.store.uow import Database, UnitOfWork

PG_ADMIN = os.environ.get("PAYGUARD_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
console = Console(width=max(160, Console().width))

Op = Callable[[int], Awaitable[object]]


# --------------------------------------------------------------------------- timing

@dataclass
class Run:
    """Completed calls over wall time, with each call's latency in seconds."""

    count: int = 0
    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)
    cpu: float = 0.0  # CPU seconds the server under test spent (see ``server_cpu``)

    @property
    def rate(self) -> float:
        return self.count / self.seconds if self.seconds else 0.0

    def percentile(self, p: float) -> float:
        """Nearest-rank percentile in milliseconds (no interpolation: it is a real sample)."""
        if not self.latencies:
            return float("nan")
        ordered = sorted(self.latencies)
        rank = max(0, min(len(ordered) - 1, round(p / 100 * len(ordered)) - 1))
        return ordered[rank] * 1000

    @property
    def cpu_ms(self) -> float:
        """Server CPU milliseconds per call: unlike the rate, barely moved by what else
        runs on the machine, so it is the figure to compare on a shared box."""
        return 1000 * self.cpu / self.count if self.count else float("nan")

    def merge(self, other: Run) -> Run:
        return Run(self.count + other.count, self.seconds + other.seconds,
                   self.latencies + other.latencies, self.cpu + other.cpu)


async def drive(op: Op, requests: int, concurrency: int, *, offset: int = 0) -> Run:
    """Call ``op(i)`` for ``offset <= i < offset + requests`` from ``concurrency`` tasks.

    Tasks pull the next index from a shared counter (a closed-loop client: each task sends
    its next request as soon as the previous one answered), so the rate is what the
    system sustains at that concurrency. ``op`` raises on any unexpected outcome: a
    benchmark that silently counts failures as throughput would lie.
    """
    next_index = offset
    end = offset + requests
    latencies: list[float] = []

    async def worker() -> None:
        nonlocal next_index
        while next_index < end:
            i = next_index
            next_index += 1
            t0 = time.perf_counter()
            await op(i)
            latencies.append(time.perf_counter() - t0)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(min(concurrency, requests))))
    return Run(len(latencies), time.perf_counter() - started, latencies)


@dataclass
class Pair:
    subject: Run
    baseline: Run

    @property
    def ratio(self) -> float:
        return self.subject.rate / self.baseline.rate if self.baseline.rate else float("nan")


async def interleave(subject: Op, baseline: Op, *, requests: int, concurrency: int,
                     rounds: int, warmup: int = 0, offset: int = 0,
                     cpu: tuple[Callable[[], float], Callable[[], float]] | None = None
                     ) -> Pair:
    """Measure ``subject`` and ``baseline`` in alternating rounds of ``requests/rounds``.

    Other engineers' tests share these 2 cores, so load drifts during a run; alternating
    (and swapping who goes first each round) spreads that drift over both sides of the
    ratio instead of charging it to whichever ran second. Indices handed to the ops never
    repeat, so ops can derive unique keys and ids from them. ``cpu``: (subject's, baseline's)
    CPU-seconds readers (``server_cpu``), read around each measured round.
    """
    per = max(1, requests // rounds)
    if warmup:  # open pools and connections, fill caches: not part of the measurement
        await drive(baseline, warmup, concurrency, offset=offset)
        await drive(subject, warmup, concurrency, offset=offset + warmup)
        offset += 2 * warmup
    sub, base = Run(), Run()
    for r in range(rounds):
        first_subject = r % 2 == 1
        for is_subject in ((True, False) if first_subject else (False, True)):
            read_cpu = cpu[0 if is_subject else 1] if cpu else None
            cpu_before = read_cpu() if read_cpu else 0.0
            run = await drive(subject if is_subject else baseline, per, concurrency,
                              offset=offset)
            if read_cpu:
                run.cpu = read_cpu() - cpu_before
            offset += per
            if is_subject:
                sub = sub.merge(run)
            else:
                base = base.merge(run)
    return Pair(sub, base)


def items_needed(requests: int, rounds: int, warmup: int) -> int:
    """Stock items consumed by one ``interleave`` of purchases (plus slack)."""
    return max(1, requests // rounds) * rounds + 2 * warmup + 16


# --------------------------------------------------------------------------- databases

@dataclass
class BenchDb:
    backend: str  # "sqlite" | "postgresql"
    url: str  # plain URL, as PAYGUARD_DATABASE_URL takes it
    data_dir: Path

    @property
    def async_url(self) -> str:
        return to_async_url(self.url)

    def settings(self) -> Settings:
        return Settings(data_dir=self.data_dir, database_url=self.url, log_requests=False)


@asynccontextmanager
async def bench_database(backend: str) -> AsyncIterator[BenchDb]:
    """A migrated throwaway database (SQLite file or ``payguard_bench_<random>``), removed after."""
    with tempfile.TemporaryDirectory(prefix="payguard-bench-") as tmp:
        data_dir = Path(tmp)
        if backend == "sqlite":
            db = BenchDb(backend, f"sqlite:///{data_dir / 'bench.db'}", data_dir)
            await migrate(db.async_url)
            yield db
            return
        name = f"payguard_bench_{uuid.uuid4().hex[:8]}"
        admin = await asyncpg.connect(PG_ADMIN)
        await admin.execute(f'CREATE DATABASE "{name}"')
        try:
            db = BenchDb(backend, PG_ADMIN.rsplit("/", 1)[0] + "/" + name, data_dir)
            await migrate(db.async_url)
            yield db
        finally:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            await admin.close()


def open_database(db: BenchDb) -> Database:
    """payguard's own engine and unit of work, configured exactly as the app does."""
    return Database(create_engine(db.async_url))


def backends(choice: str) -> list[str]:
    return ["sqlite", "postgresql"] if choice == "both" else [choice]


# --------------------------------------------------------------------------- seeding

@dataclass(frozen=True)
class Buyer:
    user_id: str
    token: str


async def seed_buyers(database: Database, settings: Settings, n: int, *,
                      balance: int) -> list[Buyer]:
    """``n`` users with funded wallets, created through payguard's own services."""
    buyers: list[Buyer] = []
    for _ in range(n):
        async def make(uow: UnitOfWork) -> Buyer:
            user = await users.create_user(uow.conn, email=f"{uuid.uuid4().hex[:12]}@bench.test",
                                           name=None, currency=settings.currency)
            if balance:
                await wallets.adjust(uow.conn, user_id=user["id"], currency=settings.currency,
                                     amount=balance, set_balance=None, reason="bench funds")
            return Buyer(user["id"], user["token"])

        buyers.append(await database.transaction(make))
    return buyers


async def seed_product(database: Database, settings: Settings, *, price: int,
                       items: int) -> str:
    """A product with ``items`` unassigned stock items; returns its id."""
    sku = f"BENCH-{uuid.uuid4().hex[:8]}"

    async def make(uow: UnitOfWork) -> str:
        product = await catalog.create_product(
            uow.conn, sku=sku, name=sku, price=price, currency=settings.currency,
            items=[f"{sku}-{i}" for i in range(items)])
        return str(product["id"])

    return await database.transaction(make)


# --------------------------------------------------------------------------- processes

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _spawn(args: Sequence[str], env: Mapping[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    with open(log_path, "ab") as log:
        # Own session: stop() signals the whole group (uvicorn workers included) and
        # nothing else.
        return subprocess.Popen(list(args), env=dict(env), stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)


SPAWNED: dict[str, Spawned] = {}  # by base URL, for ``server_cpu``


def group_cpu_seconds(pgid: int) -> float:
    """User + system CPU seconds of every live process in process group ``pgid`` (a
    spawned server and its worker processes), from /proc."""
    total = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue  # exited while we looked
        fields = text[text.rfind(")") + 2:].split()
        if int(fields[2]) == pgid:  # pgrp; utime and stime are fields 14 and 15 of stat
            total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def server_cpu(base_url: str) -> Callable[[], float]:
    """A reader of the CPU seconds used so far by the server spawned at ``base_url``."""
    pgid = SPAWNED[base_url].proc.pid
    return lambda: group_cpu_seconds(pgid)


class Spawned:
    """A ``python -m payguard ...`` (or another module) child on a known port, with its log
    in the data dir."""

    def __init__(self, name: str, args: Sequence[str], env: Mapping[str, str], port: int,
                 health_path: str, log_dir: Path, *, module: str = "payguard") -> None:
        self.name = name
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.health_path = health_path
        self.log_path = log_dir / f"{name}-{port}.log"
        self.proc = _spawn([sys.executable, "-m", module, *args], env, self.log_path)
        SPAWNED[self.url] = self

    def log_tail(self) -> str:
        return self.log_path.read_text(errors="replace")[-3000:]

    async def wait_ready(self, limit: float = 30.0) -> None:
        deadline = time.monotonic() + limit
        async with httpx.AsyncClient(timeout=1) as client:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"{self.name} exited early:\n{self.log_tail()}")
                try:
                    r = await client.get(self.url + self.health_path)
                    if r.status_code < 500:
                        return
                except httpx.HTTPError:
                    pass
                await asyncio.sleep(0.1)
        self.stop()
        raise RuntimeError(f"{self.name} not ready in {limit}s:\n{self.log_tail()}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)


def base_env(db: BenchDb, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    # Drop the caller's PAYGUARD_* so a developer's shell can't skew a run.
    env = {k: v for k, v in os.environ.items() if not k.startswith("PAYGUARD_")}
    env.update({
        "PAYGUARD_DATA_DIR": str(db.data_dir),
        "PAYGUARD_DATABASE_URL": db.url,
        "PAYGUARD_LOG_REQUESTS": "false",
        # A benchmark's few clients stand for many users: per-user limits would cap it.
        "PAYGUARD_MAX_PENDING_CHECKOUTS": "1000000",
        "PAYGUARD_MAX_HELD_ITEMS": "1000000",
        "PAYGUARD_MAX_PENDING_TOPUPS": "1000000",
        "PAYGUARD_MAX_KEYS_PER_HOUR": "100000000",
    })
    env.update(extra or {})
    return env


@asynccontextmanager
async def payguard_server(db: BenchDb, *, workers: int = 1,
                          env: Mapping[str, str] | None = None,
                          port: int | None = None) -> AsyncIterator[tuple[str, str]]:
    """``payguard serve`` on ``db``; yields (base URL, admin token)."""
    port = port or free_port()
    admin_token = "pgadm_bench_" + uuid.uuid4().hex
    full_env = base_env(db, {"PAYGUARD_ADMIN_TOKEN": admin_token,
                             "PAYGUARD_PUBLIC_URL": f"http://127.0.0.1:{port}", **(env or {})})
    server = Spawned("server", ["serve", "--host", "127.0.0.1", "--port", str(port),
                                "--workers", str(workers)], full_env, port, "/healthz",
                     db.data_dir)
    try:
        # Generous: --workers N each migrate and connect at start, slow on a loaded box.
        await server.wait_ready(limit=120.0)
        yield server.url, admin_token
    finally:
        server.stop()


@asynccontextmanager
async def simulator(db: BenchDb, *, port: int, env: Mapping[str, str]) -> AsyncIterator[str]:
    """``payguard sim`` in its own process; yields its base URL."""
    sim = Spawned("sim", ["sim", "--port", str(port)], base_env(db, env), port,
                  "/v1/checkout/sessions/cs_none", db.data_dir)
    try:
        await sim.wait_ready()
        yield sim.url
    finally:
        sim.stop()


def http_client(base_url: str, concurrency: int) -> httpx.AsyncClient:
    """One keep-alive connection per concurrent client, as 64 real clients would hold."""
    return httpx.AsyncClient(
        base_url=base_url, timeout=120,
        limits=httpx.Limits(max_connections=concurrency,
                            max_keepalive_connections=concurrency),
    )


def stripe_signature(secret: str, body: bytes, timestamp: int | None = None) -> str:
    """``Stripe-Signature`` exactly as Stripe computes it (HMAC-SHA256 of "t.body")."""
    t = int(time.time()) if timestamp is None else timestamp
    mac = hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={t},v1={mac}"


def expect(response: httpx.Response, *statuses: int) -> httpx.Response:
    if response.status_code not in statuses:
        raise RuntimeError(f"{response.request.method} {response.request.url.path}: "
                           f"{response.status_code} {response.text[:500]}")
    return response


# --------------------------------------------------------------------------- output

def table(title: str, columns: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    t = Table(title=title, title_justify="left")
    for i, name in enumerate(columns):
        t.add_column(name, justify="left" if i < 3 else "right")
    for row in rows:
        t.add_row(*(fmt(v) for v in row))
    console.print(t)


def fmt(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.2f}" if abs(value) < 10 else f"{value:.0f}"
    return str(value)


def warn_if_starved(args: object) -> None:
    """Each round runs ``requests/rounds`` calls; fewer than ``concurrency`` of them would
    quietly measure a lower concurrency than the table header claims."""
    requests, rounds, concurrency = (getattr(args, k) for k in ("requests", "rounds",
                                                                  "concurrency"))
    if requests // rounds < concurrency:
        console.print(f"[yellow]--requests {requests} over {rounds} rounds gives "
                      f"{requests // rounds} calls per round: fewer than --concurrency "
                      f"{concurrency}, so fewer clients are ever in flight[/yellow]")
