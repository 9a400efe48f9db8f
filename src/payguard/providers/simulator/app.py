"""The simulator's HTTP surface: a Stripe-compatible API subset plus the hosted page.

``create_simulator_app(settings)`` returns a FastAPI app. ``payguard serve`` mounts it at
``/sim``; ``payguard sim`` runs it alone. Starlette does not run a mounted app's lifespan,
so resources are opened lazily and the mounting app should ``await
app.state.simulator.aclose()`` on shutdown (the standalone app does this itself).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import random
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, cast
from urllib.parse import parse_qsl

from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from payguard.providers.simulator import objects
from payguard.providers.simulator.errors import StripeApiError, invalid
from payguard.providers.simulator.forms import decode_form, decode_pairs
from payguard.providers.simulator.page import (
    page_headers,
    render_error_page,
    render_page,
    return_urls,
    success_redirect,
)
from payguard.providers.simulator.store import SimStore, Txn
from payguard.providers.simulator.webhooks import Deliverer, PlannedDelivery, WebhookPolicy

if TYPE_CHECKING:
    from payguard.config import Settings

__all__ = ["Simulator", "SimulatorOptions", "create_simulator_app"]

Op = Callable[[Txn, dict[str, Any]], dict[str, Any]]


@dataclass(frozen=True)
class SimulatorOptions:
    """Everything the simulator reads from settings; tests build it directly."""

    db_path: Path
    api_key: str
    webhook: WebhookPolicy
    failure_rate: float = 0.0
    latency_ms: int = 0
    #: Also opens the debugging endpoints (``/deliveries``), besides the secret key.
    admin_token: str | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> SimulatorOptions:
        url = (settings.sim_webhook_url
               or settings.public_url.rstrip("/") + "/api/webhooks/stripe")
        return cls(
            db_path=Path(settings.data_dir) / "simulator.db",
            api_key=settings.stripe_api_key,
            webhook=WebhookPolicy(
                url=url,
                secret=settings.stripe_webhook_secret,
                duplicates=settings.sim_duplicate_deliveries,
                drop=settings.sim_drop_webhooks,
                attempts=settings.sim_webhook_attempts,
                backoff=settings.sim_webhook_backoff,
            ),
            failure_rate=settings.sim_failure_rate,
            latency_ms=settings.sim_latency_ms,
            admin_token=settings.admin_token,
        )

    def with_webhook(self, **changes: Any) -> SimulatorOptions:
        return replace(self, webhook=replace(self.webhook, **changes))


def _error(exc: StripeApiError) -> Response:
    return Response(exc.body(), status_code=exc.status, media_type="application/json")


def _html(body: str, status: int = 200, *, form_targets: tuple[str, ...] = ()) -> HTMLResponse:
    return HTMLResponse(body, status_code=status, headers=page_headers(form_targets))


def _base_url(request: Request) -> str:
    # root_path carries the mount prefix (/sim), so URLs work mounted and standalone.
    return f"{request.url.scheme}://{request.url.netloc}{request.scope.get('root_path', '')}"


class Simulator:
    def __init__(self, options: SimulatorOptions) -> None:
        self.options = options
        self.store = SimStore(options.db_path)
        self.deliverer = Deliverer(self.store, options.webhook)
        self._rng = random.Random()
        # Fault injection (``payguard race --provider-timeout-every``): until ``_stall_until``
        # (monotonic) every API call first sleeps ``_stall_seconds``, then still executes,
        # like a provider that answers after the caller gave up.
        self._stall_until = 0.0
        self._stall_seconds = 0.0

    def stall(self, seconds: float, window: float) -> None:
        self._stall_seconds = seconds
        self._stall_until = time.monotonic() + window

    async def aclose(self) -> None:
        await self.deliverer.aclose()

    def _authorize(self, request: Request, *, admin: bool = False) -> None:
        header = request.headers.get("authorization", "")
        if not header:
            raise StripeApiError(401, "invalid_request_error",
                                 "You did not provide an API key.")
        scheme, _, key = header.partition(" ")
        allowed = [self.options.api_key]
        if admin and self.options.admin_token:
            allowed.append(self.options.admin_token)
        key = key.strip()
        if scheme.lower() != "bearer" or not any(
                hmac.compare_digest(key.encode(), a.encode()) for a in allowed):
            raise StripeApiError(401, "invalid_request_error", "Invalid API Key provided.")

    async def api(self, request: Request, op: Op, *, idempotent: bool) -> Response:
        """Auth, injected faults, params, idempotency and expansion around one operation."""
        try:
            self._authorize(request)
            if self.options.latency_ms:
                await asyncio.sleep(self.options.latency_ms / 1000)
            if time.monotonic() < self._stall_until:
                await asyncio.sleep(self._stall_seconds)
            # Injected failures happen "before the API executes" and are never stored
            # under the idempotency key, so a retry with the same key can succeed.
            if self._rng.random() < self.options.failure_rate:
                raise StripeApiError(500, "api_error", "Simulated failure (sim_failure_rate).")
            try:
                if request.method == "GET":
                    params = decode_pairs(list(request.query_params.multi_items()))
                else:
                    params = decode_form(await request.body())
            except (ValueError, UnicodeDecodeError, RecursionError) as exc:
                raise invalid(f"unreadable parameters: {exc}"[:300]) from exc
        except StripeApiError as exc:
            return _error(exc)

        key = request.headers.get("idempotency-key") if idempotent else None
        raw_expand = params.pop("expand", [])
        expand_paths = [str(p) for p in (raw_expand if isinstance(raw_expand, list) else [])]
        fingerprint = hashlib.sha256(json.dumps(
            [request.method, request.url.path, params, expand_paths], sort_keys=True
        ).encode()).hexdigest()

        def work(txn: Txn) -> tuple[int, str, bool, list[PlannedDelivery]]:
            objects.expire_due(txn)
            if key:
                row = txn.conn.execute(
                    "SELECT fingerprint, status, body FROM idempotency "
                    "WHERE api_key = ? AND key = ?", (self.options.api_key, key)).fetchone()
                if row is not None:
                    if row[0] != fingerprint:
                        err = StripeApiError(
                            400, "idempotency_error",
                            "Keys for idempotent requests can only be used with the same "
                            "parameters they were first used with. Try using a key other "
                            f"than '{key}' if you meant to execute a different request.")
                        return err.status, err.body(), False, self.deliverer.plan(txn)
                    return int(row[1]), str(row[2]), True, self.deliverer.plan(txn)
            mark = len(txn.events)
            txn.conn.execute("SAVEPOINT op")
            try:
                result = objects.expand(txn, op(txn, params), expand_paths)
                status, body = 200, json.dumps(result)
            except StripeApiError as exc:
                txn.conn.execute("ROLLBACK TO op")
                del txn.events[mark:]
                status, body = exc.status, exc.body()
            txn.conn.execute("RELEASE op")
            if key:
                # Stripe keeps keys 24 hours; prune as we go.
                txn.conn.execute("DELETE FROM idempotency WHERE created < ?", (txn.now - 86400,))
                txn.conn.execute(
                    "INSERT INTO idempotency (api_key, key, fingerprint, status, body, created) "
                    "VALUES (?, ?, ?, ?, ?, ?)",
                    (self.options.api_key, key, fingerprint, status, body, txn.now))
            return status, body, False, self.deliverer.plan(txn)

        (status, body, replayed, planned), _ = await self.store.run(
            work, base_url=_base_url(request), write=request.method != "GET")
        self.deliverer.start(planned)
        headers = {"Request-Id": objects.new_id("req_")}
        if key:
            headers["Idempotency-Key"] = key
        if replayed:
            headers["Idempotent-Replayed"] = "true"
        return Response(body, status_code=status, media_type="application/json",
                        headers=headers)

    async def pay(self, session_id: str, body: dict[str, Any]) -> dict[str, Any]:
        outcome = body.get("outcome")
        if outcome not in objects.OUTCOMES:
            raise invalid(f"outcome must be one of {sorted(objects.OUTCOMES)}", param="outcome")
        raw_card = body.get("card")
        card: dict[str, Any] = raw_card if isinstance(raw_card, dict) else {}
        brand = body.get("card_brand") or card.get("brand") or "visa"
        last4 = body.get("card_last4") or card.get("last4") or "4242"
        if not isinstance(brand, str) or not 0 < len(brand) <= 40:
            raise invalid("card brand must be a short string", param="card_brand")
        if not isinstance(last4, str) or len(last4) != 4 or not last4.isascii() \
                or not last4.isdigit():
            raise invalid("card last4 must be 4 digits", param="card_last4")
        for name in ("name", "email"):
            value = body.get(name)
            if value is not None and (not isinstance(value, str) or len(value) > 320):
                raise invalid(f"{name} must be a string of at most 320 characters",
                              param=name)

        def work(txn: Txn) -> tuple[dict[str, Any] | StripeApiError, list[PlannedDelivery]]:
            objects.expire_due(txn)
            mark = len(txn.events)
            txn.conn.execute("SAVEPOINT op")
            try:
                session = objects.pay_session(
                    txn, session_id, cast(objects.Outcome, outcome), card_brand=brand,
                    card_last4=last4, name=body.get("name"), email=body.get("email"))
            except StripeApiError as exc:
                # Keep the expiry sweep (and its events); drop the refused payment.
                txn.conn.execute("ROLLBACK TO op")
                del txn.events[mark:]
                txn.conn.execute("RELEASE op")
                return exc, self.deliverer.plan(txn)
            txn.conn.execute("RELEASE op")
            events = [{"id": e.id, "type": e.type} for e in txn.events[mark:]]
            planned = self.deliverer.plan(txn)
            return ({"session": session, "events": events,
                     "deliveries": [d.id for d in planned]}, planned)

        (result, planned), _ = await self.store.run(work)
        self.deliverer.start(planned)
        if isinstance(result, StripeApiError):
            raise result
        return result

    async def session(self, session_id: str) -> dict[str, Any]:
        def work(txn: Txn) -> tuple[dict[str, Any], list[PlannedDelivery]]:
            objects.expire_due(txn)
            session = objects.get_session(txn, session_id)
            session["_line_items"] = objects.session_line_items(txn, session_id)
            return session, self.deliverer.plan(txn)

        (session, planned), _ = await self.store.run(work, write=False)
        self.deliverer.start(planned)
        return session

    async def deliveries(
        self, session_id: str | None, event_id: str | None
    ) -> list[dict[str, Any]]:
        rows = await self.store.read(
            "SELECT id, event_id, event_type, session_id, url, state, attempts, last_status, "
            "last_error, updated FROM deliveries WHERE (? IS NULL OR session_id = ?) "
            "AND (? IS NULL OR event_id = ?) ORDER BY id",
            session_id, session_id, event_id, event_id)
        names = ("id", "event_id", "event_type", "session_id", "url", "state", "attempts",
                 "last_status", "last_error", "updated")
        return [dict(zip(names, row, strict=True)) for row in rows]


async def _pay_body(request: Request) -> tuple[dict[str, Any], bool]:
    """The pay form or JSON body; ``StripeApiError`` (400) when it is not an object."""
    raw = await request.body()
    if request.headers.get("content-type", "").startswith("application/json"):
        try:
            data = json.loads(raw or b"{}")
        except (ValueError, RecursionError) as exc:  # also invalid UTF-8, huge integers
            raise invalid("the body is not valid JSON") from exc
        if not isinstance(data, dict):
            raise invalid("the body must be a JSON object")
        return data, True
    try:
        return dict(parse_qsl(raw.decode("utf-8"), keep_blank_values=True)), False
    except (ValueError, UnicodeDecodeError) as exc:
        raise invalid("the body is not a valid form") from exc


def _validation_error(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    first = exc.errors()[0] if exc.errors() else {}
    param = ".".join(str(p) for p in first.get("loc", ())[1:]) or None
    return _error(invalid(f"Invalid parameter: {first.get('msg', 'invalid')}", param=param))


def _http_error(_request: Request, exc: Exception) -> Response:
    """Unknown paths, wrong methods and oversized bodies, in Stripe's error shape."""
    assert isinstance(exc, StarletteHTTPException)
    if exc.status_code == 404:
        error = StripeApiError(404, "invalid_request_error", "Unrecognized request URL.")
    else:
        error = StripeApiError(exc.status_code, "invalid_request_error",
                               str(exc.detail)[:300])
    response = _error(error)
    response.headers.update(exc.headers or {})
    return response


def create_simulator_app(settings: Settings, options: SimulatorOptions | None = None) -> FastAPI:
    sim = Simulator(options or SimulatorOptions.from_settings(settings))

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await sim.store.ensure_ready()
        yield
        await sim.aclose()

    app = FastAPI(title="payguard simulated provider", lifespan=lifespan, docs_url=None,
                  redoc_url=None, openapi_url=None)
    app.state.simulator = sim
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)

    @app.post("/_faults/stall")
    async def stall(request: Request) -> Response:
        """Fault injection: API calls of the next ``window`` seconds answer ``seconds`` late."""
        try:
            sim._authorize(request)
            body = json.loads(await request.body() or b"{}")
            sim.stall(float(body.get("seconds", 0)), float(body.get("window", 0)))
        except StripeApiError as exc:
            return _error(exc)
        except (ValueError, TypeError, AttributeError) as exc:
            return _error(invalid(f"bad stall request: {exc}"))
        return Response(b'{"ok":true}', media_type="application/json")

    @app.post("/v1/checkout/sessions")
    async def create_session(request: Request) -> Response:
        return await sim.api(request, objects.create_session, idempotent=True)

    @app.get("/v1/checkout/sessions/{session_id}")
    async def retrieve_session(request: Request, session_id: str) -> Response:
        return await sim.api(request, lambda txn, _: objects.get_session(txn, session_id),
                             idempotent=False)

    @app.post("/v1/checkout/sessions/{session_id}/expire")
    async def expire_session(request: Request, session_id: str) -> Response:
        return await sim.api(request, lambda txn, _: objects.expire_session(txn, session_id),
                             idempotent=True)

    @app.post("/v1/refunds")
    async def create_refund(request: Request) -> Response:
        return await sim.api(request, objects.create_refund, idempotent=True)

    @app.get("/v1/payment_intents/{pi_id}")
    async def retrieve_payment_intent(request: Request, pi_id: str) -> Response:
        return await sim.api(request, lambda txn, _: objects.get_payment_intent(txn, pi_id),
                             idempotent=False)

    @app.get("/checkout/{session_id}", name="sim_checkout_page")
    async def checkout_page(session_id: str,
                            declined: Annotated[int, Query(ge=0, le=1)] = 0) -> HTMLResponse:
        try:
            session = await sim.session(session_id)
        except StripeApiError as exc:
            return _html(render_error_page(exc.message), exc.status)
        items = session.pop("_line_items")
        return _html(render_page(session, items, declined=bool(declined)),
                     form_targets=return_urls(session))

    @app.post("/checkout/{session_id}/pay")
    async def pay(request: Request, session_id: str) -> Response:
        try:
            body, is_json = await _pay_body(request)
        except StripeApiError as exc:
            return _error(exc)
        try:
            result = await sim.pay(session_id, body)
        except StripeApiError as exc:
            if is_json:
                return _error(exc)
            return RedirectResponse(str(request.url_for("sim_checkout_page",
                                                        session_id=session_id)), 303)
        if is_json:
            return JSONResponse(result)
        session = result["session"]
        if session["status"] == "open":  # declined: back to the page with a notice
            page = request.url_for("sim_checkout_page", session_id=session_id)
            return RedirectResponse(f"{page}?declined=1", 303)
        # Only ever to the session's own success URL (http(s), checked when the session
        # was created); Stripe fills this template in it.
        try:
            return RedirectResponse(success_redirect(session), 303)
        except ValueError as exc:
            return _error(invalid(str(exc), param="success_url"))

    @app.get("/deliveries", response_model=None)
    async def deliveries(request: Request,
                         session_id: Annotated[str | None, Query(max_length=200)] = None,
                         event_id: Annotated[str | None, Query(max_length=200)] = None
                         ) -> dict[str, Any] | Response:
        """Webhook deliveries and their state, so tests can wait for them. They name
        sessions and events, so they need the secret key or the admin token."""
        try:
            sim._authorize(request, admin=True)
        except StripeApiError as exc:
            return _error(exc)
        return {"object": "list", "data": await sim.deliveries(session_id, event_id)}

    return app
