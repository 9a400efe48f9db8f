"""The composition root: the one place that builds payguard's parts and wires them together.

Every entry point gets its dependencies here: the web app (``api.app``'s lifespan), every
CLI command (``serve --demo``, ``reconcile``) and the tests. It is the only module that may
import from every layer; nothing below it builds engines, clients or services by itself.

    async with app_context(load_settings()) as ctx:
        await reconcile(ctx)
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from payguard.api.problems import render_error
from payguard.config import Settings
from payguard.holders import Heartbeat
from payguard.idempotency import IdempotencyGuard
from payguard.idempotency.responses import json_response
from payguard.ledger import ensure_platform_accounts
from payguard.locks import create_lock_service
from payguard.outbox import OutboxDispatcher
from payguard.providers import create_provider
from payguard.service import phonepe_callbacks, users, webhooks
from payguard.service.auth import Authenticator, TokenCache
from payguard.service.batch_writer import BatchWriter
from payguard.service.context import AppContext
from payguard.service.inbox_applier import InboxApplier
from payguard.store.engine import create_engine
from payguard.store.migrate import migrate
from payguard.store.uow import Database, UnitOfWork
from payguard.telemetry import NO_METRICS, MetricsSink

__all__ = ["app_context", "build_context", "close_context", "open_database"]

log = logging.getLogger("payguard.bootstrap")

#: Connections of the group-commit writer's own pool: it runs one batch at a time.
WRITER_POOL_SIZE = 1


async def open_database(settings: Settings) -> Database:
    """Migrate the configured database to the newest schema and open it."""
    url = settings.resolved_database_url
    await migrate(url)
    db = Database(
        create_engine(url, pool_size=settings.db_pool_size,
                      connect_timeout=settings.db_connect_timeout,
                      synchronous_commit=settings.db_synchronous_commit),
        unavailable_wait=settings.db_unavailable_wait,
        hot_pool_size=settings.db_pool_size, connect_timeout=settings.db_connect_timeout,
    )

    async def platform_accounts(uow: UnitOfWork) -> None:
        # Created up front so no purchase ever has to create (and lock) them.
        await ensure_platform_accounts(uow.conn, settings.currency)

    await db.transaction(platform_accounts)
    return db


def _connect(settings: Settings, pool_size: int, *, pre_ping: bool = True) -> Database:
    """A ``Database`` on the configured (already migrated) server, with its failover
    settings."""
    return Database(
        create_engine(settings.resolved_database_url, pool_size=pool_size,
                      connect_timeout=settings.db_connect_timeout,
                      synchronous_commit=settings.db_synchronous_commit,
                      pre_ping=pre_ping),
        unavailable_wait=settings.db_unavailable_wait,
    )


async def build_context(settings: Settings, *,
                        metrics: MetricsSink = NO_METRICS) -> AppContext:
    """Everything one process needs, reporting to ``metrics``. Close with ``close_context``."""
    db = await open_database(settings)
    # This process as a holder of claims and locks; its heartbeat tells the others it lives.
    heartbeat = Heartbeat(db, lease=settings.holder_lease)
    await heartbeat.start()
    guard = IdempotencyGuard(
        db, ttl=settings.idempotency_ttl, lock_timeout=settings.idempotency_lock_timeout,
        render_error=render_error, hold_seconds=settings.test_hold_seconds,
        holder_id=heartbeat.id, holder_lease=settings.holder_lease, metrics=metrics,
        max_keys_per_hour=settings.max_keys_per_hour,
    )
    admin_token = settings.ensure_admin_token()
    auth = Authenticator(lambda digest: users.find_by_token_digest(db, digest), admin_token,
                         TokenCache(ttl=settings.token_cache_ttl,
                                    max_entries=settings.token_cache_size))
    ctx = AppContext(
        settings=settings,
        db=db,
        guard=guard,
        locks=create_lock_service(settings, db, holder_id=heartbeat.id, metrics=metrics),
        provider=create_provider(settings, metrics=metrics),
        outbox=OutboxDispatcher(db, settings, metrics=metrics),
        metrics=metrics,
        admin_token=admin_token,
        auth=auth,
        inbox=InboxApplier(db, lease=settings.inbox_lease,
                           concurrency=settings.inbox_concurrency, metrics=metrics),
        heartbeat=heartbeat,
        # The writer has a pool of its own: queued behind the request path's reads in a
        # shared pool, every batch would wait for connections while its callers wait for it.
        # It only runs Database.transaction, which replays a batch that met a dead
        # connection, so it skips the pool's pre-ping (three round trips per batch).
        writer=BatchWriter(_connect(settings, WRITER_POOL_SIZE, pre_ping=False), settings,
                           render_ok=json_response, render_error=render_error,
                           metrics=metrics, holder_id=heartbeat.id,
                           holder_lease=settings.holder_lease),
    )
    # Webhook events and callbacks are acknowledged first and applied from the inbox.
    ctx.inbox.register(webhooks.PROVIDER, webhooks.stripe_preparer(ctx))
    ctx.inbox.register(phonepe_callbacks.PROVIDER, phonepe_callbacks.phonepe_preparer(ctx))
    return ctx


async def close_context(ctx: AppContext) -> None:
    """Stop the group-commit writer, retire this holder, close the provider's HTTP client,
    the lock backend and the database pools."""
    try:
        await ctx.inbox.close()  # in-flight applies stay pending; another process takes them
        await ctx.writer.close()
        await ctx.writer.db.dispose()
        await ctx.heartbeat.stop()
        for closer in (ctx.provider.close, ctx.locks.close):
            try:
                await closer()
            except Exception:
                log.exception("closing %s failed", closer)
    finally:
        await ctx.db.dispose()


@asynccontextmanager
async def app_context(settings: Settings, *,
                      metrics: MetricsSink = NO_METRICS) -> AsyncIterator[AppContext]:
    """``build_context`` for a block; closed on exit."""
    ctx = await build_context(settings, metrics=metrics)
    try:
        yield ctx
    finally:
        await close_context(ctx)
