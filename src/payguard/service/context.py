"""Everything a use case needs, built once per process by ``payguard.bootstrap``.

No import-time globals: the web app, every CLI command and the tests get their
``AppContext`` from ``bootstrap.build_context`` (or build one from these same typed parts).
"""

from __future__ import annotations

from dataclasses import dataclass

from payguard.config import Settings
from payguard.holders import Heartbeat
from payguard.idempotency import IdempotencyGuard
from payguard.locks import LockService
from payguard.outbox import OutboxDispatcher
from payguard.providers import PaymentProvider
from payguard.service.auth import Authenticator
from payguard.service.batch_writer import BatchWriter
from payguard.service.inbox_applier import InboxApplier
from payguard.store.uow import Database
from payguard.telemetry import MetricsSink

__all__ = ["AppContext"]


@dataclass(frozen=True, slots=True)
class AppContext:
    settings: Settings
    db: Database
    guard: IdempotencyGuard
    locks: LockService
    provider: PaymentProvider
    outbox: OutboxDispatcher
    metrics: MetricsSink
    admin_token: str
    auth: Authenticator  # bearer token -> Principal (admin in memory, users cached)
    inbox: InboxApplier  # applies acknowledged webhook events (providers register with it)
    heartbeat: Heartbeat  # this process as a holder of claims and locks
    writer: BatchWriter  # group commit of wallet purchases and adjustments (one per process)
