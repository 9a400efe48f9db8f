"""Everything a request needs, built once at startup and handed down (no import-time globals)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from payguard.config import Settings
from payguard.idempotency import IdempotencyGuard
from payguard.store.uow import Database

__all__ = ["AppContext"]


@dataclass
class AppContext:
    settings: Settings
    db: Database
    guard: IdempotencyGuard
    admin_token: str
    locks: Any = None  # payguard.locks.LockService
    provider: Any = None  # payguard.providers.PaymentProvider
    outbox: Any = None  # payguard.outbox.OutboxDispatcher
    heartbeat: Any = None  # payguard.holders.Heartbeat: this process as a holder
    extras: dict[str, Any] = field(default_factory=dict)
