"""A local PhonePe Standard Checkout v2 (the subset payguard uses), for development and tests.

Same spirit as the Stripe simulator: state in its own SQLite file shared by every worker,
a hosted pay page, fault injection, and server-to-server callbacks delivered at least once.
The official SDK talks to it unchanged (see ``providers/phonepe/sdk_client.py``):

- ``POST /v1/oauth/token``: client credentials -> ``O-Bearer`` token (kept in the state file).
- ``POST /checkout/v2/pay``, ``GET /checkout/v2/order/{merchantOrderId}/status``,
  ``POST /payments/v2/refund``, ``GET /payments/v2/refund/{merchantRefundId}/status``.
- ``GET /pay/{merchantOrderId}``: the hosted page; ``POST /pay/{merchantOrderId}``
  ``{"outcome": "success"|"failure"|"pending"}``; ``pending`` leaves the attempt pending
  until another outcome settles it. Optional per-payment callback faults in the same body:
  ``duplicates`` (each callback sent N times, concurrently, shuffled), ``drop``,
  ``delay_ms``.
- Callbacks (``PG_ORDER_COMPLETED``, ``PG_ORDER_FAILED``, ``PG_REFUND_COMPLETED``) carry
  ``Authorization: sha256(username:password)``, as PhonePe sends them.
- ``GET /stats``: API calls in flight now and at most since the last ``POST /stats/reset``,
  measured here, where the gateway sees them. ``GET /deliveries``: callback deliveries.

Differences from PhonePe, on purpose: ``expireAfter`` may be as short as 1 s so tests can
watch expiry; a repeated pay for a merchant order id with the same amount answers the same
order (PhonePe refuses a duplicate id: the adapter then reads the order's status instead).
"""

from __future__ import annotations

import asyncio
import hashlib
import html
import json
import random
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast
from urllib.parse import parse_qsl

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response

from payguard.providers.phonepe.simulator import orders
from payguard.providers.phonepe.simulator.orders import PhonePeApiError
from payguard.providers.simulator.store import SimStore, Txn
from payguard.providers.simulator.webhooks import Deliverer, PlannedDelivery, WebhookPolicy

if TYPE_CHECKING:
    from payguard.config import Settings

__all__ = ["PhonePeSimOptions", "PhonePeSimulator", "callback_authorization",
           "create_phonepe_simulator_app"]


def callback_authorization(username: str, password: str) -> str:
    """The ``Authorization`` value PhonePe puts on callbacks: SHA-256 hex of ``user:pass``."""
    return hashlib.sha256(f"{username}:{password}".encode()).hexdigest()


@dataclass(frozen=True)
class PhonePeSimOptions:
    db_path: Path
    client_id: str
    client_secret: str
    callback: WebhookPolicy
    failure_rate: float = 0.0
    latency_ms: int = 0

    @classmethod
    def from_settings(cls, settings: Settings) -> PhonePeSimOptions:
        url = (settings.sim_phonepe_callback_url
               or settings.public_url.rstrip("/") + "/api/webhooks/phonepe")
        return cls(
            db_path=Path(settings.data_dir) / "phonepe_simulator.db",
            client_id=settings.phonepe_client_id,
            client_secret=settings.phonepe_client_secret,
            callback=WebhookPolicy(
                url=url, secret="",
                authorization=callback_authorization(settings.phonepe_callback_username,
                                                     settings.phonepe_callback_password),
                duplicates=settings.sim_duplicate_deliveries,
                drop=settings.sim_drop_webhooks,
                delay=settings.sim_callback_delay_ms / 1000,
                attempts=settings.sim_webhook_attempts,
                backoff=settings.sim_webhook_backoff,
                user_agent="PhonePe-Callback/2.0",
            ),
            failure_rate=settings.sim_failure_rate,
            latency_ms=settings.sim_latency_ms,
        )


@dataclass
class CallMeter:
    """API calls in flight, as the gateway sees them (one process: the event loop)."""

    in_flight: int = 0
    max_in_flight: int = 0
    calls: int = 0

    @contextmanager
    def measure(self) -> Iterator[None]:
        self.calls += 1
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            yield
        finally:
            self.in_flight -= 1


def _error(exc: PhonePeApiError) -> Response:
    return Response(exc.body(), status_code=exc.status, media_type="application/json")


def _base_url(request: Request) -> str:
    return f"{request.url.scheme}://{request.url.netloc}{request.scope.get('root_path', '')}"


class PhonePeSimulator:
    def __init__(self, options: PhonePeSimOptions) -> None:
        self.options = options
        self.store = SimStore(options.db_path, extra_schema=orders.SCHEMA)
        self.deliverer = Deliverer(self.store, options.callback)
        self.meter = CallMeter()
        self._rng = random.Random()

    async def aclose(self) -> None:
        await self.deliverer.aclose()

    async def api(self, request: Request, op: Callable[[Txn], Any], *, write: bool,
                  authorize: bool = True) -> Response:
        """Meter, injected faults, token check and one transaction around an operation."""
        with self.meter.measure():
            if self.options.latency_ms:
                await asyncio.sleep(self.options.latency_ms / 1000)
            if self._rng.random() < self.options.failure_rate:
                return _error(PhonePeApiError(500, "INTERNAL_SERVER_ERROR",
                                              "Simulated failure (sim_failure_rate)"))
            header = request.headers.get("authorization", "")

            def work(txn: Txn) -> tuple[Any, list[PlannedDelivery]]:
                if authorize:
                    orders.check_token(txn, header)
                orders.expire_due(txn)
                return op(txn), self.deliverer.plan(txn)

            try:
                (result, planned), _ = await self.store.run(work, write=write)
            except PhonePeApiError as exc:
                return _error(exc)
            self.deliverer.start(planned)
            return JSONResponse(result)

    async def pay(self, merchant_order_id: str, outcome: str,
                  faults: dict[str, Any]) -> dict[str, Any]:
        if outcome not in orders.OUTCOMES:
            raise PhonePeApiError(400, "BAD_REQUEST",
                                  f"outcome must be one of {sorted(orders.OUTCOMES)}")
        deliverer = self.deliverer.with_policy(**faults) if faults else self.deliverer

        def work(txn: Txn) -> tuple[dict[str, Any], list[PlannedDelivery]]:
            orders.expire_due(txn)
            early = deliverer.plan(txn)  # expiry callbacks of other orders
            txn.events.clear()
            order = orders.pay_order(txn, merchant_order_id,
                                     cast(orders.Outcome, outcome))
            return order, early + deliverer.plan(txn)

        (order, planned), _ = await self.store.run(work)
        deliverer.start(planned)
        return order

    async def order(self, merchant_order_id: str) -> dict[str, Any]:
        def work(txn: Txn) -> tuple[dict[str, Any], list[PlannedDelivery]]:
            orders.expire_due(txn)
            return orders.get_order(txn, merchant_order_id), self.deliverer.plan(txn)

        (order, planned), _ = await self.store.run(work, write=False)
        self.deliverer.start(planned)
        return order


def _faults(body: dict[str, Any]) -> dict[str, Any]:
    """Per-payment callback faults from the pay body (all optional)."""
    faults: dict[str, Any] = {}
    if body.get("duplicates") is not None:
        faults["duplicates"] = max(1, int(body["duplicates"]))
    if body.get("drop") is not None:
        faults["drop"] = str(body["drop"]).lower() in ("1", "true", "yes")
    if body.get("delay_ms") is not None:
        faults["delay"] = max(0, int(body["delay_ms"])) / 1000
    return faults


def _page(order: dict[str, Any]) -> str:
    moid = html.escape(order["merchantOrderId"])
    rupees = f"{order['amount'] / 100:.2f}"
    buttons = "".join(
        f'<button name="outcome" value="{o}">{label}</button> '
        for o, label in (("success", "Pay"), ("failure", "Fail"), ("pending", "Stay pending")))
    return (f"<!doctype html><meta charset=utf-8><title>PhonePe (simulated)</title>"
            f"<h1>PhonePe (simulated)</h1><p>Order {moid}: &#8377;{rupees} "
            f"({html.escape(order['state'])})</p>"
            f'<form method="post" action="{moid}">{buttons}</form>')


def create_phonepe_simulator_app(settings: Settings,
                                 options: PhonePeSimOptions | None = None) -> FastAPI:
    sim = PhonePeSimulator(options or PhonePeSimOptions.from_settings(settings))

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await sim.store.ensure_ready()
        yield
        await sim.aclose()

    app = FastAPI(title="payguard simulated PhonePe", lifespan=lifespan, docs_url=None,
                  redoc_url=None, openapi_url=None)
    app.state.simulator = sim

    @app.post("/v1/oauth/token")
    async def token(request: Request) -> Response:
        form = dict(parse_qsl((await request.body()).decode("utf-8", "replace")))

        def op(txn: Txn) -> dict[str, Any]:
            if (form.get("client_id"), form.get("client_secret")) != (
                    sim.options.client_id, sim.options.client_secret) or form.get(
                    "grant_type") != "client_credentials":
                raise PhonePeApiError(401, "INVALID_CLIENT", "Client authentication failed")
            return orders.issue_token(txn)

        return await sim.api(request, op, write=True, authorize=False)

    @app.post("/checkout/v2/pay")
    async def pay_api(request: Request) -> Response:
        try:
            body = json.loads(await request.body())
        except ValueError:
            return _error(PhonePeApiError(400, "BAD_REQUEST", "body is not JSON"))
        base = _base_url(request)
        return await sim.api(request, lambda txn: orders.create_order(
            txn, body if isinstance(body, dict) else {}, page_base=base), write=False)

    @app.get("/checkout/v2/order/{merchant_order_id}/status")
    async def order_status(request: Request, merchant_order_id: str) -> Response:
        return await sim.api(request, lambda txn: orders.order_status(txn, merchant_order_id),
                             write=False)

    @app.post("/payments/v2/refund")
    async def refund(request: Request) -> Response:
        try:
            body = json.loads(await request.body())
        except ValueError:
            return _error(PhonePeApiError(400, "BAD_REQUEST", "body is not JSON"))
        return await sim.api(request, lambda txn: orders.create_refund(
            txn, body if isinstance(body, dict) else {}), write=False)

    @app.get("/payments/v2/refund/{merchant_refund_id}/status")
    async def refund_status(request: Request, merchant_refund_id: str) -> Response:
        return await sim.api(request, lambda txn: orders.get_refund(txn, merchant_refund_id),
                             write=False)

    @app.get("/pay/{merchant_order_id}", name="phonepe_pay_page")
    async def pay_page(merchant_order_id: str) -> HTMLResponse:
        try:
            order = await sim.order(merchant_order_id)
        except PhonePeApiError as exc:
            return HTMLResponse(f"<!doctype html><p>{html.escape(exc.message)}</p>",
                                status_code=exc.status)
        return HTMLResponse(_page(order))

    @app.post("/pay/{merchant_order_id}")
    async def pay(request: Request, merchant_order_id: str) -> Response:
        raw = await request.body()
        is_json = request.headers.get("content-type", "").startswith("application/json")
        try:
            data = json.loads(raw or b"{}") if is_json else dict(
                parse_qsl(raw.decode("utf-8"), keep_blank_values=True))
            if not isinstance(data, dict):
                raise PhonePeApiError(400, "BAD_REQUEST", "body must be a JSON object")
            order = await sim.pay(merchant_order_id, str(data.get("outcome")), _faults(data))
        except (ValueError, UnicodeDecodeError) as exc:
            return _error(PhonePeApiError(400, "BAD_REQUEST", str(exc)))
        except PhonePeApiError as exc:
            return _error(exc)
        if is_json:
            return JSONResponse(order)
        target = order.get("merchantRedirectUrl") or str(
            request.url_for("phonepe_pay_page", merchant_order_id=merchant_order_id))
        return RedirectResponse(str(target), 303)

    @app.get("/stats")
    async def stats() -> dict[str, int]:
        m = sim.meter
        return {"in_flight": m.in_flight, "max_in_flight": m.max_in_flight, "calls": m.calls}

    @app.post("/stats/reset")
    async def reset_stats() -> dict[str, int]:
        sim.meter.max_in_flight = sim.meter.in_flight
        sim.meter.calls = 0
        return {"in_flight": sim.meter.in_flight}

    @app.get("/deliveries")
    async def deliveries(merchant_order_id: str | None = None) -> dict[str, Any]:
        rows = await sim.store.read(
            "SELECT id, event_id, event_type, session_id, state, attempts, last_status "
            "FROM deliveries WHERE (? IS NULL OR session_id = ?) ORDER BY id",
            merchant_order_id, merchant_order_id)
        names = ("id", "event_id", "event_type", "merchant_order_id", "state", "attempts",
                 "last_status")
        return {"data": [dict(zip(names, row, strict=True)) for row in rows]}

    return app
