"""Start, kill, restart and always stop payguard server processes for ``race --spawn``.

One instance on SQLite serves the simulator itself at ``/sim``. Several instances share one
PostgreSQL and one standalone simulator (``payguard sim``), whose webhooks go to instance 0.
"""

from __future__ import annotations

import asyncio
import atexit
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

import httpx

__all__ = ["Cluster", "RedisServer", "SpawnFailed", "free_port"]

HEALTH_TIMEOUT = 60.0


class SpawnFailed(Exception):
    """A server process did not become healthy."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class _Proc:
    name: str
    argv: list[str]
    env: dict[str, str]
    port: int
    log: Path
    health_path: str
    popen: subprocess.Popen[bytes] | None = None
    restarts: int = field(default=0)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


_LIVE: set[subprocess.Popen[bytes]] = set()


@atexit.register
def _reap_orphans() -> None:
    # Last resort when the event loop never reached its ``finally`` (e.g. a second Ctrl-C).
    for popen in list(_LIVE):
        if popen.poll() is None:
            popen.kill()
            popen.wait()


class Cluster:
    """``instances`` serve processes (plus a shared simulator when there are several)."""

    def __init__(
        self,
        *,
        instances: int = 1,
        database_url: str | None = None,
        redis_url: str | None = None,
        provider_failure_rate: float = 0.0,
        duplicate_deliveries: int = 1,
        extra_env: dict[str, str] | None = None,
        python: str = sys.executable,
        provider: str = "stripe",
    ) -> None:
        if instances < 1:
            raise ValueError("instances must be at least 1")
        if instances > 1 and not (database_url or "").startswith(("postgresql", "postgres:")):
            raise ValueError(
                "--instances > 1 needs --database-url postgresql://...: SQLite is one process's"
            )
        self.instances = instances
        self.database_url = database_url
        self.redis_url = redis_url
        self.python = python
        self.admin_token = "pgadm_race_" + secrets.token_urlsafe(16)
        self.redis_prefix = f"payguard:race:{secrets.token_hex(6)}:"
        self.webhook_secret = "whsec_race_" + secrets.token_urlsafe(16)
        self._tmp = Path(tempfile.mkdtemp(prefix="payguard-race-"))
        self._failure_rate = provider_failure_rate
        self._duplicates = duplicate_deliveries
        self._extra = dict(extra_env or {})
        if provider not in ("stripe", "phonepe"):
            raise ValueError("provider must be stripe or phonepe")
        self.provider = provider
        self.servers: list[_Proc] = []
        self.sim: _Proc | None = None

    # -- description ------------------------------------------------------------------

    @property
    def urls(self) -> list[str]:
        return [p.url for p in self.servers]

    @property
    def sim_url(self) -> str:
        mount = "/sim/phonepe" if self.provider == "phonepe" else "/sim"
        return self.sim.url if self.sim else f"{self.servers[0].url}{mount}"

    @property
    def description(self) -> str:
        db = "PostgreSQL" if self.database_url else "SQLite (temp dir)"
        redis = " + Redis locks" if self.redis_url else ""
        return f"spawned {self.instances} instance(s) on {db}{redis}: {', '.join(self.urls)}"

    # -- lifecycle ---------------------------------------------------------------------

    def _env(self, data_dir: Path, public_url: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PAYGUARD_")}
        env.update({
            "PAYGUARD_DATA_DIR": str(data_dir),
            "PAYGUARD_ADMIN_TOKEN": self.admin_token,
            "PAYGUARD_PUBLIC_URL": public_url,
            "PAYGUARD_STRIPE_WEBHOOK_SECRET": self.webhook_secret,
            "PAYGUARD_SIM_DUPLICATE_DELIVERIES": str(self._duplicates),
            "PAYGUARD_SIM_FAILURE_RATE": str(self._failure_rate),
            "PAYGUARD_LOG_REQUESTS": "false",
        })
        if self.database_url:
            env["PAYGUARD_DATABASE_URL"] = self.database_url
        if self.redis_url:
            env["PAYGUARD_REDIS_URL"] = self.redis_url
            # A Redis may be shared (by other runs, other deployments): keys of its own.
            env["PAYGUARD_LOCK_REDIS_PREFIX"] = self.redis_prefix
        if self.provider == "phonepe":
            env.update(PAYGUARD_SIMULATED_PROVIDER="phonepe", PAYGUARD_CURRENCY="INR")
        env.update(self._extra)
        return env

    async def start(self) -> None:
        ports = [free_port() for _ in range(self.instances)]
        webhook_url = f"http://127.0.0.1:{ports[0]}/api/webhooks/{self.provider}"
        sim_port = free_port() if self.instances > 1 else None
        for i, port in enumerate(ports):
            # One public URL for all, as behind a load balancer: it is part of what a checkout
            # sends the provider (return URLs), and an instance resuming another's checkout
            # must send the very same request under the purchase's derived key.
            env = self._env(self._tmp / f"instance-{i}", f"http://127.0.0.1:{ports[0]}")
            env["PAYGUARD_SIM_WEBHOOK_URL"] = webhook_url
            env["PAYGUARD_SIM_PHONEPE_CALLBACK_URL"] = webhook_url
            if sim_port is not None:
                env["PAYGUARD_STRIPE_API_BASE"] = f"http://127.0.0.1:{sim_port}/"
                env["PAYGUARD_PHONEPE_API_BASE"] = f"http://127.0.0.1:{sim_port}"
            self.servers.append(_Proc(
                f"instance-{i}",
                [self.python, "-m", "payguard", "serve", "--host", "127.0.0.1",
                 "--port", str(port)],
                env, port, self._tmp / f"instance-{i}.log", "/healthz",
            ))
        if sim_port is not None:
            # The simulator sends webhooks to PUBLIC_URL/api/webhooks/stripe unless told
            # otherwise: point both at instance 0.
            env = self._env(self._tmp / "sim", self.servers[0].url)
            env["PAYGUARD_SIM_WEBHOOK_URL"] = webhook_url
            env["PAYGUARD_SIM_PHONEPE_CALLBACK_URL"] = webhook_url
            self.sim = _Proc("sim", [self.python, "-m", "payguard", "sim", "--port",
                                     str(sim_port), "--provider", self.provider],
                             env, sim_port, self._tmp / "sim.log", "")
        # Migrate once up front: N servers migrating one fresh database at once would race.
        await self._migrate(self.servers[0].env)
        procs = ([self.sim] if self.sim else []) + self.servers
        for proc in procs:
            self._launch(proc)
        await asyncio.gather(*(self._wait_healthy(p) for p in procs))

    async def _migrate(self, env: dict[str, str]) -> None:
        proc = await asyncio.create_subprocess_exec(
            self.python, "-m", "payguard", "migrate", env=env,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        )
        out, _ = await proc.communicate()
        if proc.returncode != 0:
            raise SpawnFailed(
                f"payguard migrate failed ({proc.returncode}): {out.decode()[-2000:]}")

    def _launch(self, proc: _Proc) -> None:
        Path(proc.env.get("PAYGUARD_DATA_DIR", self._tmp)).mkdir(parents=True, exist_ok=True)
        with proc.log.open("ab") as log:
            # A new session: a Ctrl-C in the terminal reaches only the harness, which then
            # stops the servers itself, in order.
            proc.popen = subprocess.Popen(
                proc.argv, env=proc.env, stdout=log, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, start_new_session=True,
            )
        _LIVE.add(proc.popen)

    async def _wait_healthy(self, proc: _Proc) -> None:
        deadline = time.monotonic() + HEALTH_TIMEOUT
        async with httpx.AsyncClient(timeout=2.0) as client:
            while time.monotonic() < deadline:
                assert proc.popen is not None
                if proc.popen.poll() is not None:
                    raise SpawnFailed(f"{proc.name} exited with {proc.popen.returncode}:\n"
                                      f"{self._tail(proc)}")
                try:
                    reply = await client.get(proc.url + (proc.health_path or "/"))
                    # The standalone simulator has no health route: any answer means up.
                    if reply.status_code == 200 or not proc.health_path:
                        return
                except httpx.TransportError:
                    pass
                await asyncio.sleep(0.1)
        raise SpawnFailed(f"{proc.name} not healthy after {HEALTH_TIMEOUT:.0f}s:\n"
                          f"{self._tail(proc)}")

    @staticmethod
    def _tail(proc: _Proc) -> str:
        try:
            return proc.log.read_text(errors="replace")[-3000:]
        except OSError:
            return "(no log)"

    async def kill(self, index: int) -> None:
        """SIGKILL one instance: no shutdown hooks, in-flight requests die half-way."""
        popen = self.servers[index].popen
        if popen is not None and popen.poll() is None:
            popen.send_signal(signal.SIGKILL)
            await asyncio.to_thread(popen.wait)
            _LIVE.discard(popen)

    async def restart(self, index: int) -> None:
        proc = self.servers[index]
        proc.restarts += 1
        self._launch(proc)
        await self._wait_healthy(proc)

    async def stop(self) -> None:
        procs = self.servers + ([self.sim] if self.sim else [])
        for proc in procs:
            if proc.popen is not None and proc.popen.poll() is None:
                proc.popen.terminate()
        for proc in procs:
            if proc.popen is None:
                continue
            try:
                await asyncio.to_thread(proc.popen.wait, 10)
            except subprocess.TimeoutExpired:
                proc.popen.kill()
                await asyncio.to_thread(proc.popen.wait)
            _LIVE.discard(proc.popen)
        shutil.rmtree(self._tmp, ignore_errors=True)

    def pid(self, index: int) -> int:
        popen = self.servers[index].popen
        assert popen is not None
        return popen.pid

    def logs(self) -> str:
        procs = self.servers + ([self.sim] if self.sim else [])
        return "\n".join(f"--- {p.name} ---\n{self._tail(p)}" for p in procs)

    async def __aenter__(self) -> Cluster:
        try:
            await self.start()
        except BaseException:
            await asyncio.shield(self.stop())
            raise
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await asyncio.shield(self.stop())


class RedisServer:
    """A throwaway ``redis-server`` the harness owns: no persistence, a free port, a temp
    dir. ``restart`` SIGKILLs it and starts it again on the same port, with nothing kept."""

    def __init__(self, binary: str = "redis-server") -> None:
        found = shutil.which(binary)
        if found is None:
            raise SpawnFailed(f"{binary} not found on PATH (needed for --restart-redis-every)")
        self.binary = found
        self.port = free_port()
        self._dir = Path(tempfile.mkdtemp(prefix="payguard-race-redis-"))
        self.popen: subprocess.Popen[bytes] | None = None
        self.restarts = 0

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def _launch(self) -> subprocess.Popen[bytes]:
        with (self._dir / "redis.log").open("ab") as log:
            popen = subprocess.Popen(
                [self.binary, "--port", str(self.port), "--bind", "127.0.0.1",
                 "--save", "", "--appendonly", "no", "--dir", str(self._dir)],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True)
        _LIVE.add(popen)
        return popen

    async def start(self) -> None:
        self.popen = self._launch()
        deadline = time.monotonic() + HEALTH_TIMEOUT
        while time.monotonic() < deadline:
            if self.popen.poll() is not None:
                raise SpawnFailed(f"redis-server exited with {self.popen.returncode}")
            try:
                _reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
            except OSError:
                await asyncio.sleep(0.05)
                continue
            writer.close()
            return
        raise SpawnFailed("redis-server did not start listening")

    async def kill(self) -> None:
        if self.popen is not None and self.popen.poll() is None:
            self.popen.send_signal(signal.SIGKILL)
            await asyncio.to_thread(self.popen.wait)
            _LIVE.discard(self.popen)

    async def restart(self) -> None:
        await self.kill()
        self.restarts += 1
        await self.start()

    async def stop(self) -> None:
        await self.kill()
        shutil.rmtree(self._dir, ignore_errors=True)

    async def __aenter__(self) -> RedisServer:
        try:
            await self.start()
        except BaseException:
            await self.stop()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        await asyncio.shield(self.stop())
