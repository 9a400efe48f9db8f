"""The FastAPI app factory. Everything stateful is created in the lifespan, per process."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from payguard.api import problems
from payguard.api.authfirst import AuthFirstMiddleware
from payguard.api.bodylimit import BodyLimitMiddleware
from payguard.api.fastpaths import UnknownPathGuard
from payguard.api.logging import RequestLogMiddleware
from payguard.api.openapi import install_openapi
from payguard.api.routes import (
    admin,
    admin_views,
    checkout,
    dashboard,
    docs,
    operations,
    ops,
    session,
    user,
)
from payguard.bootstrap import build_context, close_context
from payguard.clock import utcnow
from payguard.config import Settings
from payguard.errors import PayguardError
from payguard.idempotency.store import reap_expired
from payguard.logs import configure_logging
from payguard.metrics import Metrics, MetricsMiddleware
from payguard.private_files import restrict_umask
from payguard.service.reconcile import poll_pending, reconcile
from payguard.store.uow import Database

__all__ = ["create_app", "create_app_from_env"]

log = logging.getLogger("payguard.app")


async def reap_idempotency_keys(db: Database) -> int:
    return await db.transaction(lambda uow: reap_expired(uow.conn, utcnow()))


async def _every(seconds: float, job: Callable[[], Awaitable[object]], name: str) -> None:
    while True:
        await asyncio.sleep(seconds)
        try:
            await job()
        except Exception:
            log.exception("periodic job %s failed", name)


def _simulator_apps(settings: Settings) -> dict[str, FastAPI]:
    """The simulator to mount in this server, by path (none when an API base is set)."""
    if settings.provider != "simulated":
        return {}
    if settings.simulated_provider == "phonepe":
        if settings.phonepe_api_base:
            return {}
        from payguard.providers.phonepe.simulator import create_phonepe_simulator_app

        return {"/sim/phonepe": create_phonepe_simulator_app(settings)}
    if settings.stripe_api_base:
        return {}
    from payguard.providers.simulator import create_simulator_app

    return {"/sim": create_simulator_app(settings)}


def create_app(settings: Settings) -> FastAPI:
    refusals = settings.production_problems()
    if refusals:  # also when started by a process manager without `payguard serve`
        raise RuntimeError("refusing to start: " + "; ".join(refusals))
    sim_apps = _simulator_apps(settings)
    metrics = Metrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        for sim_app in sim_apps.values():  # Starlette does not run a mounted app's lifespan
            await sim_app.state.simulator.store.ensure_ready()
        ctx = await build_context(settings, metrics=metrics)
        app.state.ctx = ctx
        stop = asyncio.Event()
        tasks = [
            asyncio.create_task(_every(
                min(3600.0, max(1.0, settings.idempotency_ttl / 10)),
                lambda: reap_idempotency_keys(ctx.db), "idempotency-reaper")),
            asyncio.create_task(ctx.outbox.run_forever(stop, settings.outbox_interval)),
            # Webhook events still pending: failed applies after their backoff, and the
            # events of a process that died after acknowledging them.
            asyncio.create_task(_every(settings.inbox_interval, ctx.inbox.poll, "inbox")),
        ]
        if settings.reconcile_interval > 0:
            tasks.append(asyncio.create_task(_every(
                settings.reconcile_interval, lambda: reconcile(ctx), "reconciler")))
        if settings.payment_provider == "phonepe" and settings.phonepe_poll_interval > 0:
            tasks.append(asyncio.create_task(_every(
                settings.phonepe_poll_interval, lambda: poll_pending(ctx), "phonepe-poller")))
        try:
            yield
        finally:
            stop.set()
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await close_context(ctx)
            metrics.close()
            for sim_app in sim_apps.values():
                await sim_app.state.simulator.aclose()

    # FastAPI's own OpenTelemetry hooks off: payguard keeps its own request metrics and
    # logs, and the per-request provider checks were a measurable share of a request.
    app = FastAPI(title="payguard", version="0.1.0", lifespan=lifespan,
                  docs_url=None, openapi_url="/api/openapi.json", redoc_url=None,
                  telemetry={"tracing": False, "metrics": False, "logs": False,
                             "operation_spans": False})
    app.state.metrics = metrics  # the Prometheus exposition for GET /metrics
    app.add_exception_handler(PayguardError, problems.payguard_error_handler)
    app.add_exception_handler(RequestValidationError, problems.validation_error_handler)
    app.add_exception_handler(StarletteHTTPException, problems.http_error_handler)
    app.add_exception_handler(Exception, problems.unhandled_error_handler)
    # Routing: the simulator is one Mount tried first (one prefix check for everyone, and
    # simulator requests never walk the API's routes); the API's routers next; the
    # dashboard last. A path no route can match is answered by UnknownPathGuard.
    for path, sim_app in sim_apps.items():
        app.mount(path, sim_app)
    app.include_router(ops.router)
    app.include_router(admin.router)
    app.include_router(admin_views.router)
    app.include_router(session.router)
    app.include_router(user.router)
    app.include_router(checkout.router)
    app.include_router(operations.router)
    app.include_router(dashboard.router)
    install_openapi(app)
    if settings.api_docs or (settings.api_docs is None and settings.provider == "simulated"):
        app.include_router(docs.router)
    # Added innermost first: the body limit wraps authentication, which wraps the routes;
    # a path no route can match is answered before either (UnknownPathGuard).
    app.add_middleware(AuthFirstMiddleware)
    app.add_middleware(BodyLimitMiddleware, default=settings.max_body_bytes,
                       limits=[("/api/webhooks/", settings.webhook_max_body_bytes)])
    app.add_middleware(UnknownPathGuard)
    app.add_middleware(RequestLogMiddleware, enabled=settings.log_requests)
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    return app


def create_app_from_env() -> FastAPI:
    """Entry point for uvicorn workers: settings come from the environment."""
    configure_logging()
    restrict_umask()
    return create_app(Settings())
