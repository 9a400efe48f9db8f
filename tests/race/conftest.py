"""Fixtures for the harness tests: the broken app on a real uvicorn server."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import uvicorn

from tests.race.broken_app import create_app


@dataclass(frozen=True)
class LiveApp:
    url: str
    admin_token: str


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(params=[True], ids=["openapi"])
def broken_app(request: pytest.FixtureRequest) -> Iterator[LiveApp]:
    token = "broken-admin"
    port = _free_port()
    config = uvicorn.Config(create_app(token, openapi=request.param), host="127.0.0.1", port=port,
                            log_level="warning", lifespan="off", loop="asyncio")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("broken app did not start")
        time.sleep(0.02)
    try:
        yield LiveApp(f"http://127.0.0.1:{port}", token)
    finally:
        server.should_exit = True
        thread.join(10)
