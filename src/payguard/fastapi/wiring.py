"""``Payguard``: one application's database, tables, idempotency guard and lock service,
started and stopped with the app, and the FastAPI dependencies built on them."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

from fastapi import Depends, FastAPI, Request
from starlette.responses import Response

from payguard.errors import PayguardError
from payguard.fastapi.idempotency import IdempotentRequest, to_response
from payguard.holders.heartbeat import Heartbeat
from payguard.idempotency.guard import IdempotencyGuard, RenderError
from payguard.idempotency.keys import parse_key
from payguard.locks.factory import lock_service
from payguard.locks.service import Lease, LockService
from payguard.problems import problem_details
from payguard.store.tables import Tables, create_tables, tables
from payguard.store.uow import Database
from payguard.toolkit import connect

__all__ = ["Payguard", "principal_of"]


def principal_of(who: Any) -> str:
    """The principal string of what an auth dependency returned: a string as is, else its
    ``id`` attribute (a user object), else ``str()``."""
    if isinstance(who, str):
        return who
    ident = getattr(who, "id", None)
    return str(ident if ident is not None else who)


class Payguard:
    """payguard wired into one application.

    ``database``: a URL (``sqlite:///app.db``, ``postgresql://...``) or a ``Database``
    (then the app owns it and ``stop`` does not close it). ``prefix``: the primitives'
    table prefix. ``create_tables``: create missing tables at start (instead of your
    Alembic migrations). ``lock_backend``: ``"sql"`` (default: every process on the
    database), ``"local"`` (one process) or ``"redis"`` (``redis_url``). ``render_error``:
    the hook that renders a ``PayguardError`` (default problem+json) for stored responses
    and for the 409/422/400 answers. ``holder_lease``: seconds after which a crashed
    process's keys are taken over (a heartbeat row per process); None: only
    ``lock_timeout`` frees a stuck key.
    """

    def __init__(self, database: str | Database, *, prefix: str = "",
                 create_tables: bool = False, lock_backend: str = "sql",
                 redis_url: str | None = None, ttl: float = 86400.0,
                 lock_timeout: float = 60.0, render_error: RenderError = problem_details,
                 holder_lease: float | None = None) -> None:
        self._owns_db = isinstance(database, str)
        self.db = connect(database) if isinstance(database, str) else database
        self.tables: Tables = tables(prefix)
        self.create_tables = create_tables
        self.render_error = render_error
        self.heartbeat = (Heartbeat(self.db, lease=holder_lease, tables=self.tables)
                          if holder_lease else None)
        holder_id = self.heartbeat.id if self.heartbeat else None
        self.guard = IdempotencyGuard(self.db, ttl=ttl, lock_timeout=lock_timeout,
                                      render_error=render_error, holder_id=holder_id,
                                      holder_lease=holder_lease, tables=self.tables)
        self.locks: LockService = lock_service(self.db, lock_backend, redis_url=redis_url,
                                               holder_id=holder_id, tables=self.tables)

    # -- lifecycle -------------------------------------------------------------------

    async def start(self) -> None:
        """Create the tables (when asked) and start the heartbeat (when configured)."""
        if self.create_tables:
            await create_tables(self.db, bundle=self.tables)
        if self.heartbeat is not None:
            await self.heartbeat.start()

    async def stop(self) -> None:
        """Stop the heartbeat, close the lock service, and the database if we opened it."""
        if self.heartbeat is not None:
            await self.heartbeat.stop()
        await self.locks.close()
        if self._owns_db:
            await self.db.dispose()

    @asynccontextmanager
    async def lifespan(self, _app: Any = None) -> AsyncIterator[None]:
        """``FastAPI(lifespan=pg.lifespan)``, or ``async with pg.lifespan():`` anywhere."""
        await self.start()
        try:
            yield
        finally:
            await self.stop()

    def install(self, app: FastAPI) -> None:
        """Run ``lifespan`` around the app's own lifespan and answer any ``PayguardError``
        that escapes a route or dependency (a lock timeout, a missing key) through the
        ``render_error`` hook."""
        inner: Callable[[Any], AbstractAsyncContextManager[Any]] = \
            app.router.lifespan_context

        @asynccontextmanager
        async def both(app_: Any) -> AsyncIterator[Any]:
            async with self.lifespan(app_), inner(app_) as state:
                yield state

        app.router.lifespan_context = both
        app.add_exception_handler(PayguardError, self._handle_error)

    async def _handle_error(self, _request: Request, exc: Exception) -> Response:
        assert isinstance(exc, PayguardError)
        return to_response(self.render_error(exc))

    # -- dependencies ----------------------------------------------------------------

    def idempotent(self, principal: Callable[..., Any], *, required: bool = True,
                   principal_key: Callable[[Any], str] = principal_of
                   ) -> Callable[..., Awaitable[IdempotentRequest]]:
        """A dependency giving the route an ``IdempotentRequest``.

        ``principal`` is the app's own auth dependency (whatever it returns names the
        caller; keys are scoped per principal, so two users' equal keys never meet);
        ``principal_key`` turns it into a string. ``required=False`` lets requests without
        ``Idempotency-Key`` through, unguarded. A missing or malformed key is answered
        400 by ``run`` without running the effects.
        """
        guard, render_error = self.guard, self.render_error

        async def dependency(request: Request,
                             who: Any = Depends(principal)) -> IdempotentRequest:
            error: PayguardError | None = None
            try:
                key = parse_key(request.headers.getlist("idempotency-key"),
                                required=required)
            except PayguardError as exc:
                key, error = None, exc
            return IdempotentRequest(
                guard, render_error, principal=principal_key(who), key=key,
                method=request.method, path=request.url.path, body=await request.body(),
                error=error)

        return dependency

    def hold(self, key: str | Callable[[Request], str], *, ttl: float = 30.0,
             wait: float = 2.0, auto_renew: bool = False
             ) -> Callable[..., AsyncIterator[Lease]]:
        """A dependency holding a lock for the route: ``key`` is a template filled from
        the path parameters (``"account:{account_id}"``) or a function of the request.

        The lease (``lease.fencing_token`` for ``Fence``) is held until the route
        returns; a key still held after ``wait`` seconds answers 503 ``LOCK_TIMEOUT``
        (``Payguard.install`` renders it). Declare it with ``Depends(..., scope=
        "function")`` to release before the response is sent.
        """
        locks = self.locks

        async def dependency(request: Request) -> AsyncIterator[Lease]:
            name = key(request) if callable(key) else key.format(**request.path_params)
            async with locks.hold(name, ttl=ttl, wait=wait, auto_renew=auto_renew) as lease:
                yield lease

        return dependency
