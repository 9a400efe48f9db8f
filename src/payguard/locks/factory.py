"""Choosing and building the lock backend from settings."""

from __future__ import annotations

from payguard.config import Settings
from payguard.locks.epochs import epoch_source
from payguard.locks.errors import LockBackendConfigError
from payguard.locks.local import LocalBackend
from payguard.locks.redis_backend import RedisBackend
from payguard.locks.service import LockService
from payguard.locks.sql import SqlBackend
from payguard.store.uow import Database
from payguard.telemetry import NO_METRICS, MetricsSink

__all__ = ["DEFAULT_REDIS_PREFIX", "choose_backend", "create_lock_service"]

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


def create_lock_service(settings: Settings, database: Database, *, workers: int | None = None,
                        redis_prefix: str | None = None,
                        holder_id: str | None = None,
                        metrics: MetricsSink = NO_METRICS) -> LockService:
    """The lock service for this process (``holder_id``: its ``payguard.holders`` id).
    Close it with ``await service.close()``."""
    name = choose_backend(settings, workers)
    if name == "redis":
        assert settings.redis_url is not None  # checked by choose_backend
        prefix = redis_prefix or settings.lock_redis_prefix or DEFAULT_REDIS_PREFIX
        return LockService(RedisBackend(settings.redis_url, prefix=prefix,
                                        epoch_source=epoch_source(database, f"redis:{prefix}")),
                           holder_id=holder_id, metrics=metrics)
    if name == "sql":
        return LockService(SqlBackend(database.engine), holder_id=holder_id, metrics=metrics)
    return LockService(LocalBackend(epoch_source(database, "local")), holder_id=holder_id,
                       metrics=metrics)
