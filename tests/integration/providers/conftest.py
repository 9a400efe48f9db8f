"""Real servers on real sockets: the simulator under uvicorn, a tiny webhook receiver,
and the Stripe SDK adapter pointed at the simulator."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi import FastAPI, Request, Response

from payguard.config import Settings, load_settings
from payguard.providers import ProviderSession, StripeProvider
from payguard.providers.simulator import Simulator, SimulatorOptions, create_simulator_app

API_KEY = "sk_test_payguard_sim_tests"
WEBHOOK_SECRET = "whsec_payguard_sim_tests"


@asynccontextmanager
async def serve(app: FastAPI) -> AsyncIterator[str]:
    """Run ``app`` under uvicorn on a free port in this event loop; yield its base URL."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        while not server.started:
            if task.done():
                task.result()
            await asyncio.sleep(0.01)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task
        sock.close()


@dataclass
class Receiver:
    """A webhook endpoint that records every request and fails the first ``fail_first``."""

    url: str = ""
    fail_first: int = 0
    hits: list[tuple[bytes, str | None, int]] = field(default_factory=list)  # body, sig, status

    def app(self) -> FastAPI:
        app = FastAPI()

        @app.post("/hook")
        async def hook(request: Request) -> Response:
            status = 500 if len(self.hits) < self.fail_first else 200
            self.hits.append((await request.body(), request.headers.get("stripe-signature"),
                              status))
            return Response(status_code=status)

        return app

    @property
    def accepted(self) -> list[tuple[bytes, str | None]]:
        return [(body, sig) for body, sig, status in self.hits if status == 200]


@dataclass
class SimHarness:
    url: str
    sim: Simulator
    http: httpx.AsyncClient
    settings: Settings
    tmp_path: Path

    def auth(self, key: str | None = None) -> dict[str, str]:
        headers = {"Authorization": f"Bearer {API_KEY}"}
        if key:
            headers["Idempotency-Key"] = key
        return headers

    async def pay(self, session_id: str, outcome: str = "succeeded", **extra: Any) -> Any:
        r = await self.http.post(f"{self.url}/checkout/{session_id}/pay",
                                 json={"outcome": outcome, **extra})
        assert r.status_code == 200, r.text
        return r.json()

    async def deliveries(self, session_id: str) -> list[dict[str, Any]]:
        r = await self.http.get(f"{self.url}/deliveries", params={"session_id": session_id},
                                headers=self.auth())
        assert r.status_code == 200
        data: list[dict[str, Any]] = r.json()["data"]
        return data

    async def settled(self, session_id: str, within: float = 10.0) -> list[dict[str, Any]]:
        """Poll the deliveries endpoint until none is pending (what an e2e test would do)."""
        deadline = time.monotonic() + within
        while True:
            rows = await self.deliveries(session_id)
            if rows and all(r["state"] != "pending" for r in rows):
                return rows
            assert time.monotonic() < deadline, f"deliveries still pending: {rows}"
            await asyncio.sleep(0.02)


def make_settings(tmp_path: Path, **overrides: Any) -> Settings:
    base: dict[str, Any] = dict(
        data_dir=tmp_path, stripe_api_key=API_KEY, stripe_webhook_secret=WEBHOOK_SECRET,
        provider="simulated",
    )
    return load_settings(**{**base, **overrides})


SimFactory = Callable[..., Awaitable[SimHarness]]


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    rec = Receiver()
    async with serve(rec.app()) as url:
        rec.url = f"{url}/hook"
        yield rec


@pytest.fixture
async def start_sim(tmp_path: Path, receiver: Receiver) -> AsyncIterator[SimFactory]:
    """``await start_sim(failure_rate=..., duplicates=...)`` -> a running simulator."""
    async with AsyncExitStack() as stack:
        http = await stack.enter_async_context(httpx.AsyncClient(timeout=10))

        async def start(*, db_dir: Path | None = None, webhook_url: str | None = None,
                        **opts: Any) -> SimHarness:
            settings = make_settings(tmp_path)
            webhook = {k: opts.pop(k) for k in ("duplicates", "drop", "attempts", "backoff")
                       if k in opts}
            options = SimulatorOptions.from_settings(settings)
            options = SimulatorOptions(
                db_path=(db_dir or tmp_path) / "simulator.db", api_key=API_KEY,
                webhook=options.webhook, **opts,
            ).with_webhook(url=webhook_url or receiver.url, backoff=0.02, **webhook)
            app = create_simulator_app(settings, options)
            url = await stack.enter_async_context(serve(app))
            return SimHarness(url, app.state.simulator, http, settings, tmp_path)

        yield start


@pytest.fixture
async def sim(start_sim: SimFactory) -> SimHarness:
    return await start_sim()


@pytest.fixture
async def provider(sim: SimHarness) -> AsyncIterator[StripeProvider]:
    p = StripeProvider(make_settings(sim.tmp_path, stripe_api_base=sim.url))
    try:
        yield p
    finally:
        await p.close()


async def create_session(provider: StripeProvider, *, key: str = "k-create-1",
                         amount: int = 1234, purchase_id: str = "pur_1",
                         expires_in: int = 1800, **extra: Any) -> ProviderSession:
    params: dict[str, Any] = dict(
        purchase_id=purchase_id, amount=amount, currency="USD", description="Course seat",
        customer_email="ann@example.com", success_url="https://shop.test/ok?s={CHECKOUT_SESSION_ID}",
        cancel_url="https://shop.test/cancel",
        expires_at=datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=expires_in),
        metadata={"order_number": "ORD2026000001"}, idempotency_key=key,
    )
    params.update(extra)
    return await provider.create_checkout_session(**params)
