"""A real ``payguard serve`` process for end-to-end tests: start, wait, kill, restart."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

import httpx

__all__ = ["LiveServer", "free_port"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LiveServer:
    """``python -m payguard serve`` on a free port with its own data dir."""

    def __init__(self, data_dir: Path, database_url: str, *,
                 env: Mapping[str, str] | None = None, workers: int = 1,
                 port: int | None = None) -> None:
        self.data_dir = data_dir
        self.database_url = database_url
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.admin_token = "pgadm_test_" + os.urandom(8).hex()
        self.workers = workers
        self.extra_env = dict(env or {})
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = data_dir / f"server-{self.port}.log"

    def environment(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PAYGUARD_")}
        env.update({
            "PAYGUARD_DATA_DIR": str(self.data_dir),
            "PAYGUARD_DATABASE_URL": self.database_url,
            "PAYGUARD_ADMIN_TOKEN": self.admin_token,
            "PAYGUARD_PUBLIC_URL": self.url,
            "PAYGUARD_LOG_REQUESTS": "false",
        })
        env.update(self.extra_env)
        return env

    def start(self, timeout: float = 30.0) -> LiveServer:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "payguard", "serve", "--host", "127.0.0.1",
             "--port", str(self.port), "--workers", str(self.workers)],
            env=self.environment(), stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited early:\n{self.log_path.read_text()[-3000:]}")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        self.stop()
        log_tail = self.log_path.read_text()[-3000:]
        raise RuntimeError(f"server not healthy in {timeout}s:\n{log_tail}")

    def kill(self) -> None:
        """SIGKILL the whole process group: no shutdown hooks, like a crash."""
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()
        self.proc = None
