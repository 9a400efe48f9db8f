"""A throwaway PostgreSQL primary with a synchronous standby, for ``race --failover-after``.

Built with the server binaries on the machine (``initdb``, ``pg_basebackup``, ``pg_ctl``
from ``pg_config --bindir``) in a temp dir, on free local ports; run as the ``postgres``
user when the harness runs as root (``initdb`` refuses root). The primary names the
standby in ``synchronous_standby_names``, so with ``synchronous_commit=on`` a COMMIT is
acknowledged only once the standby has flushed it: that is the property under test.

The failover itself is what an operator (or Patroni) would do after losing the primary:
``kill_primary`` SIGKILLs the postmaster and every backend at once (no shutdown, no final
WAL flush to the standby), ``promote`` runs ``pg_ctl promote`` on the standby.
``stall_replication`` first freezes the primary's WAL senders (SIGSTOP), so the standby
falls behind by whatever the primary commits in that window: a synchronous primary cannot
acknowledge anything then, an asynchronous one acknowledges commits the standby never
sees, which is how ``synchronous_commit=off`` loses payments.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import asyncpg

from payguard.race.spawner import SpawnFailed, free_port

__all__ = ["PgFailoverPair", "pg_bindir"]

STANDBY_NAME = "payguard_standby"
SYNC_TIMEOUT = 60.0
_LIVE: set[Path] = set()


def pg_bindir() -> Path:
    """The PostgreSQL server binaries' directory (``pg_config --bindir``)."""
    env = os.environ.get("PAYGUARD_PG_BINDIR")
    if env:
        return Path(env)
    try:
        out = subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True,
                             check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError) as exc:
        raise SpawnFailed("pg_config not found: the failover fault needs the PostgreSQL "
                          "server binaries (initdb, pg_basebackup, pg_ctl)") from exc
    return Path(out)


def _postmaster_pid(data_dir: Path) -> int | None:
    try:
        return int((data_dir / "postmaster.pid").read_text().split("\n", 1)[0])
    except (OSError, ValueError):
        return None


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # Field 4 is the parent pid; the command name (field 2) may contain spaces.
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            found.append(int(entry.name))
    return found


def _kill_all(data_dir: Path) -> None:
    pid = _postmaster_pid(data_dir)
    if pid is None:
        return
    for victim in [pid, *_children(pid)]:
        with contextlib.suppress(ProcessLookupError):
            os.kill(victim, signal.SIGKILL)


def _remove_shared_memory(data_dir: Path) -> None:
    """Drop the SysV segment a SIGKILLed postmaster leaves behind (line 7 of its pid
    file: key and id), so repeated runs do not pile them up."""
    try:
        shmid = (data_dir / "postmaster.pid").read_text().split("\n")[6].split()[1]
    except (OSError, IndexError):
        return
    subprocess.run(["ipcrm", "-m", shmid], capture_output=True, check=False)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@atexit.register
def _reap_orphans() -> None:
    for data_dir in list(_LIVE):
        _kill_all(data_dir)


class PgFailoverPair:
    """Primary + synchronous standby; ``url`` lists both, read-write first-come."""

    def __init__(self, *, synchronous_commit: str = "on", database: str = "payguard",
                 bindir: Path | None = None, fsync: bool = False) -> None:
        self.synchronous_commit = synchronous_commit
        # Off by default on these throwaway servers: the faults are process kills, which
        # leave the OS page cache (so every written WAL byte) intact on both machines,
        # and fsync triples the build time on a loaded machine. Production keeps it on.
        self.fsync = fsync
        self.database = database
        self.bindir = bindir or pg_bindir()
        self.primary_port = free_port()
        self.standby_port = free_port()
        self._tmp = Path(tempfile.mkdtemp(prefix="payguard-pg-"))
        self.primary_dir = self._tmp / "primary"
        self.standby_dir = self._tmp / "standby"
        self._as_postgres = os.geteuid() == 0
        self.primary_alive = False

    # -- description --------------------------------------------------------------------

    @property
    def url(self) -> str:
        """The multi-host URL the instances get: whichever host takes writes."""
        return (f"postgresql://postgres@127.0.0.1:{self.primary_port},"
                f"127.0.0.1:{self.standby_port}/{self.database}"
                "?target_session_attrs=read-write")

    def server_url(self, port: int) -> str:
        return f"postgresql://postgres@127.0.0.1:{port}/{self.database}"

    @property
    def description(self) -> str:
        return (f"PostgreSQL primary :{self.primary_port} + synchronous standby "
                f":{self.standby_port} (synchronous_commit={self.synchronous_commit})")

    # -- lifecycle ---------------------------------------------------------------------

    def _run(self, *argv: str, timeout: float = 120.0) -> str:
        cmd = [str(self.bindir / argv[0]), *argv[1:]]
        if self._as_postgres:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL)
        if done.returncode != 0:
            raise SpawnFailed(f"{' '.join(argv[:2])} failed ({done.returncode}):\n"
                              f"{done.stdout[-1500:]}{done.stderr[-1500:]}")
        return done.stdout

    def _start_server(self, data_dir: Path, port: int) -> None:
        # stdout/stderr of the server go to its log file, so pg_ctl returns at once.
        self._run("pg_ctl", "-D", str(data_dir), "-l", str(data_dir.parent /
                  f"{data_dir.name}.log"), "-o", f"-p {port}", "-w", "-t", "60", "start")
        _LIVE.add(data_dir)

    def _build(self) -> None:
        if self._as_postgres:
            owner = pwd.getpwnam("postgres")
            os.chown(self._tmp, owner.pw_uid, owner.pw_gid)
        sock = self._tmp / "sock"
        sock.mkdir()
        if self._as_postgres:
            os.chown(sock, owner.pw_uid, owner.pw_gid)
        self._run("initdb", "-D", str(self.primary_dir), "-U", "postgres", "--auth=trust",
                  "-E", "UTF8", "--no-sync")
        settings = {
            "listen_addresses": "'127.0.0.1'",
            "unix_socket_directories": f"'{sock}'",
            "max_connections": "200",
            "wal_level": "replica",
            "max_wal_senders": "5",
            "synchronous_commit": self.synchronous_commit,
            "shared_buffers": "32MB",
            "fsync": "on" if self.fsync else "off",
        }
        with (self.primary_dir / "postgresql.conf").open("a") as conf:
            conf.writelines(f"{k} = {v}\n" for k, v in settings.items())
        self._start_server(self.primary_dir, self.primary_port)
        self._run("createdb", "-h", "127.0.0.1", "-p", str(self.primary_port), "-U",
                  "postgres", self.database)
        self._run("pg_basebackup", "-D", str(self.standby_dir), "-h", "127.0.0.1", "-p",
                  str(self.primary_port), "-U", "postgres", "-X", "stream", "-R",
                  "--no-sync", "-c", "fast")
        # postgresql.auto.conf is read last, so these win over the copied primary settings.
        # The standby names no standby of its own: once promoted it runs alone (see
        # docs/failover.md for what that trades), instead of blocking every commit.
        with (self.standby_dir / "postgresql.auto.conf").open("a") as conf:
            conf.write(
                f"primary_conninfo = 'host=127.0.0.1 port={self.primary_port} "
                f"user=postgres application_name={STANDBY_NAME}'\n"
                "synchronous_standby_names = ''\n"
                "hot_standby = on\n"
            )
        self._start_server(self.standby_dir, self.standby_port)

    async def start(self) -> None:
        try:
            await asyncio.to_thread(self._build)
            # Only now that the standby exists: naming it earlier would block every commit
            # (createdb included) until it connected.
            conn = await self._connect(self.primary_port)
            try:
                await conn.execute(
                    f"ALTER SYSTEM SET synchronous_standby_names = '{STANDBY_NAME}'")
                await conn.execute("SELECT pg_reload_conf()")
            finally:
                await conn.close()
            await self._wait_synchronous()
        except BaseException:
            await self.stop()
            raise
        self.primary_alive = True

    async def _connect(self, port: int, database: str = "postgres") -> asyncpg.Connection:
        return await asyncpg.connect(host="127.0.0.1", port=port, user="postgres",
                                     database=database, timeout=5)

    async def _wait_synchronous(self) -> None:
        deadline = time.monotonic() + SYNC_TIMEOUT
        conn = await self._connect(self.primary_port)
        try:
            while time.monotonic() < deadline:
                state = await conn.fetchval(
                    "SELECT sync_state FROM pg_stat_replication WHERE application_name = $1",
                    STANDBY_NAME)
                if state == "sync":
                    return
                await asyncio.sleep(0.1)
        finally:
            await conn.close()
        raise SpawnFailed(f"the standby did not become synchronous in {SYNC_TIMEOUT:.0f}s:\n"
                          f"{self.logs()}")

    # -- faults -------------------------------------------------------------------------

    async def stall_replication(self) -> int:
        """SIGSTOP the primary's WAL senders; returns how many were frozen."""
        conn = await self._connect(self.primary_port)
        try:
            pids = [int(r["pid"]) for r in await conn.fetch(
                "SELECT pid FROM pg_stat_replication")]
        finally:
            await conn.close()
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGSTOP)
        return len(pids)

    async def kill_primary(self) -> float:
        """SIGKILL the primary's postmaster and all its processes; returns the time."""
        await asyncio.to_thread(_kill_all, self.primary_dir)
        self.primary_alive = False
        return time.monotonic()

    async def promote(self) -> float:
        """Promote the standby (waits until it accepts writes); returns the time."""
        await asyncio.to_thread(self._run, "pg_ctl", "-D", str(self.standby_dir), "-w",
                                "-t", "60", "promote")
        return time.monotonic()

    def _stop_sync(self) -> None:
        for data_dir in (self.standby_dir, self.primary_dir):
            pid = _postmaster_pid(data_dir)
            if pid is None:
                continue
            if not _alive(pid):  # SIGKILLed: only its shared memory is left
                _remove_shared_memory(data_dir)
                _LIVE.discard(data_dir)
                continue
            try:  # a live server shuts down (and frees its shared memory) itself
                self._run("pg_ctl", "-D", str(data_dir), "-m", "immediate", "-w", "-t", "20",
                          "stop", timeout=30)
            except (SpawnFailed, subprocess.TimeoutExpired):
                _kill_all(data_dir)
                time.sleep(0.2)
                _remove_shared_memory(data_dir)
            _LIVE.discard(data_dir)
        shutil.rmtree(self._tmp, ignore_errors=True)

    async def stop(self) -> None:
        await asyncio.to_thread(self._stop_sync)

    def logs(self) -> str:
        parts = []
        for name in ("primary", "standby"):
            path = self._tmp / f"{name}.log"
            with contextlib.suppress(OSError):
                parts.append(f"--- {name} ---\n{path.read_text(errors='replace')[-2000:]}")
        return "\n".join(parts)
