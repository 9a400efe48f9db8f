"""Fixtures for the harness tests: small apps on a real uvicorn server in a thread."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import uvicorn
from fastapi import FastAPI

from tests.race.broken_app import create_app
from tests.race.checkout_app import create_checkout_app


@dataclass(frozen=True)
class LiveApp:
    url: str
    admin_token: str
    webhook_secret: str = ""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def serve(app: FastAPI) -> Iterator[str]:
    port = _free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                            lifespan="off", loop="asyncio")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("app did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


@pytest.fixture(params=[True], ids=["openapi"])
def broken_app(request: pytest.FixtureRequest) -> Iterator[LiveApp]:
    with serve(create_app("broken-admin", openapi=request.param)) as url:
        yield LiveApp(url, "broken-admin")


@pytest.fixture(params=[False, True], ids=["correct", "naive"])
def checkout_app(request: pytest.FixtureRequest) -> Iterator[tuple[LiveApp, bool]]:
    naive = bool(request.param)
    with serve(create_checkout_app("admin", "whsec_test", naive=naive)) as url:
        yield LiveApp(url, "admin", "whsec_test"), naive
