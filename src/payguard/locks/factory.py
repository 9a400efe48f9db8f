"""Choosing and building the lock backend from settings."""

from __future__ import annotations

from payguard.config import Settings
from payguard.locks.epochs import epoch_source
from payguard.locks.errors import LockBackendConfigError
from payguard.locks.local import LocalBackend
from payguard.locks.redis_backend import RedisBackend
from payguard.locks.service import LockService
from payguard.locks.sql import SqlBackend
from payguard.store.schema import PRIMITIVES
from payguard.store.tables import Tables
from payguard.store.uow import Database
from payguard.telemetry import NO_METRICS, MetricsSink

__all__ = ["DEFAULT_REDIS_PREFIX", "choose_backend", "create_lock_service", "lock_service"]

DEFAULT_REDIS_PREFIX = "payguard:locks:"


def choose_backend(settings: Settings, workers: int | None = None) -> str:
    """``local``, ``sql`` or ``redis`` for ``settings.lock_backend`` and the worker count.

    ``auto``: redis when a Redis URL is set, sql when the database is PostgreSQL (several
    instances may share it) or there are several workers, else local. An explicit ``local``
    with several workers is refused: each process would have its own, unrelated locks.
    """
    workers = settings.workers if workers is None else workers
    choice = settings.lock_backend
    if choice == "auto":
        if settings.redis_url:
            return "redis"
        if not settings.is_sqlite or workers > 1:
            return "sql"
        return "local"
    if choice == "local" and workers > 1:
        raise LockBackendConfigError(
            f"PAYGUARD_LOCK_BACKEND=local only works in one process, but {workers} workers "
            "were requested: use sql or redis (or auto), or run one worker")
    if choice == "redis" and not settings.redis_url:
        raise LockBackendConfigError("PAYGUARD_LOCK_BACKEND=redis needs PAYGUARD_REDIS_URL")
    return choice


def lock_service(db: Database, backend: str = "sql", *, redis_url: str | None = None,
                 redis_prefix: str = DEFAULT_REDIS_PREFIX, holder_id: str | None = None,
                 metrics: MetricsSink = NO_METRICS,
                 tables: Tables = PRIMITIVES) -> LockService:
    """A ``LockService`` over ``backend``: ``"local"`` (this process only), ``"sql"``
    (leases in ``tables.lock_leases`` of ``db``: every process on that database) or
    ``"redis"`` (``redis_url``). Fencing tokens grow across restarts of every backend (the
    epochs live in ``tables.lock_epochs``). Close it with ``await service.close()``."""
    if backend == "redis":
        if not redis_url:
            raise LockBackendConfigError("the redis lock backend needs a redis_url")
        return LockService(
            RedisBackend(redis_url, prefix=redis_prefix,
                         epoch_source=epoch_source(db, f"redis:{redis_prefix}", tables=tables)),
            holder_id=holder_id, metrics=metrics)
    if backend == "sql":
        return LockService(SqlBackend(db.engine, tables=tables), holder_id=holder_id,
                           metrics=metrics)
    if backend == "local":
        return LockService(LocalBackend(epoch_source(db, "local", tables=tables)),
                           holder_id=holder_id, metrics=metrics)
    raise LockBackendConfigError(f"unknown lock backend {backend!r}: local, sql or redis")


def create_lock_service(settings: Settings, database: Database, *, workers: int | None = None,
                        redis_prefix: str | None = None,
                        holder_id: str | None = None,
                        metrics: MetricsSink = NO_METRICS) -> LockService:
    """The lock service of the reference service's process, chosen from ``settings``
    (``holder_id``: its ``payguard.holders`` id). Close it with ``await service.close()``."""
    name = choose_backend(settings, workers)
    prefix = redis_prefix or settings.lock_redis_prefix or DEFAULT_REDIS_PREFIX
    return lock_service(database, name, redis_url=settings.redis_url, redis_prefix=prefix,
                        holder_id=holder_id, metrics=metrics)
