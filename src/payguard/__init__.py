"""payguard: payment primitives that stay correct under concurrency, and a reference service.

The public API, for use in any application (guide: docs/library.md)::

    import payguard

    db = payguard.connect("postgresql://app@db/shop")       # or "sqlite:///shop.db"
    t = await payguard.create_tables(db, prefix="payguard_")       # or Alembic: t.metadata
    guard = payguard.IdempotencyGuard(db, ttl=86400, lock_timeout=60,
                                      render_error=payguard.problem_details, tables=t)
    locks = payguard.lock_service(db, "sql", tables=t)
    ledger, numbers = payguard.Ledger(t), payguard.Sequences(t)

Every name below is imported on first use, so ``import payguard`` stays cheap and pulls in
no web framework. ``payguard.fastapi`` is the FastAPI/Starlette integration. The packages
``payguard.service``, ``payguard.api``, ``payguard.cli`` and ``payguard.race`` are the
reference service and its tools, not part of this API; they use the same primitives.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# name -> module that defines it (the objects themselves are re-exported, never copied).
_EXPORTS: dict[str, str] = {
    # schema
    "Tables": "payguard.store.tables",
    "tables": "payguard.store.tables",
    "create_tables": "payguard.store.tables",
    "drop_tables": "payguard.store.tables",
    "entries_sum_to_zero_ddl": "payguard.store.tables",
    # database and the transaction rule
    "Database": "payguard.store.uow",
    "UnitOfWork": "payguard.store.uow",
    "connect": "payguard.toolkit",
    # idempotency keys
    "IdempotencyGuard": "payguard.idempotency.guard",
    "Outcome": "payguard.idempotency.guard",
    "StoredResponse": "payguard.idempotency.store",
    "Claim": "payguard.idempotency.store",
    "parse_key": "payguard.idempotency.keys",
    "fingerprint": "payguard.idempotency.keys",
    "json_response": "payguard.idempotency.responses",
    "problem": "payguard.problems",
    "problem_details": "payguard.problems",
    "http_status": "payguard.problems",
    "STATUS_BY_CODE": "payguard.problems",
    "Heartbeat": "payguard.holders.heartbeat",
    # locks and fencing
    "LockService": "payguard.locks.service",
    "Lease": "payguard.locks.service",
    "lock_service": "payguard.locks.factory",
    "LocalBackend": "payguard.locks.local",
    "SqlBackend": "payguard.locks.sql",
    "RedisBackend": "payguard.locks.redis_backend",
    "epoch_source": "payguard.locks.epochs",
    "Fence": "payguard.locks.fencing",
    "advance_fence": "payguard.locks.fencing",
    # ledger, numbers, counters, inbox, outbox
    "Ledger": "payguard.toolkit",
    "Transfer": "payguard.ledger.transfers",
    "Sequences": "payguard.toolkit",
    "Counters": "payguard.toolkit",
    "Capacity": "payguard.capacity",
    "Inbox": "payguard.toolkit",
    "Outbox": "payguard.toolkit",
    "OutboxDispatcher": "payguard.outbox.dispatcher",
    "SmtpTransport": "payguard.outbox.transport",
    "MailboxTransport": "payguard.outbox.transport",
    "Transport": "payguard.outbox.transport",
    # errors an application catches
    "PayguardError": "payguard.errors",
    "InsufficientBalance": "payguard.errors",
    "CurrencyMismatch": "payguard.ledger.errors",
    "IdempotencyKeyMissing": "payguard.errors",
    "IdempotencyKeyInvalid": "payguard.errors",
    "IdempotencyKeyReused": "payguard.errors",
    "RequestInProgress": "payguard.errors",
    "LimitReached": "payguard.errors",
    "LockTimeout": "payguard.errors",
    "LockNotOwned": "payguard.errors",
    "LockBackendUnavailable": "payguard.locks.errors",
    "LockBackendConfigError": "payguard.locks.errors",
    "StaleFencingToken": "payguard.locks.errors",
    "DatabaseUnavailable": "payguard.errors",
    "CommitOutcomeUnknown": "payguard.errors",
}

__all__ = [
    "STATUS_BY_CODE",
    "Capacity",
    "Claim",
    "CommitOutcomeUnknown",
    "Counters",
    "CurrencyMismatch",
    "Database",
    "DatabaseUnavailable",
    "Fence",
    "Heartbeat",
    "IdempotencyGuard",
    "IdempotencyKeyInvalid",
    "IdempotencyKeyMissing",
    "IdempotencyKeyReused",
    "Inbox",
    "InsufficientBalance",
    "Lease",
    "Ledger",
    "LimitReached",
    "LocalBackend",
    "LockBackendConfigError",
    "LockBackendUnavailable",
    "LockNotOwned",
    "LockService",
    "LockTimeout",
    "MailboxTransport",
    "Outbox",
    "OutboxDispatcher",
    "Outcome",
    "PayguardError",
    "RedisBackend",
    "RequestInProgress",
    "Sequences",
    "SmtpTransport",
    "SqlBackend",
    "StaleFencingToken",
    "StoredResponse",
    "Tables",
    "Transfer",
    "Transport",
    "UnitOfWork",
    "__version__",
    "advance_fence",
    "connect",
    "create_tables",
    "drop_tables",
    "entries_sum_to_zero_ddl",
    "epoch_source",
    "fingerprint",
    "http_status",
    "json_response",
    "lock_service",
    "parse_key",
    "problem",
    "problem_details",
    "tables",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'payguard' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


if TYPE_CHECKING:  # the same names, for type checkers and IDEs
    from payguard.capacity import Capacity
    from payguard.errors import (
        CommitOutcomeUnknown,
        DatabaseUnavailable,
        IdempotencyKeyInvalid,
        IdempotencyKeyMissing,
        IdempotencyKeyReused,
        InsufficientBalance,
        LimitReached,
        LockNotOwned,
        LockTimeout,
        PayguardError,
        RequestInProgress,
    )
    from payguard.holders.heartbeat import Heartbeat
    from payguard.idempotency.guard import IdempotencyGuard, Outcome
    from payguard.idempotency.keys import fingerprint, parse_key
    from payguard.idempotency.responses import json_response
    from payguard.idempotency.store import Claim, StoredResponse
    from payguard.ledger.errors import CurrencyMismatch
    from payguard.ledger.transfers import Transfer
    from payguard.locks.epochs import epoch_source
    from payguard.locks.errors import (
        LockBackendConfigError,
        LockBackendUnavailable,
        StaleFencingToken,
    )
    from payguard.locks.factory import lock_service
    from payguard.locks.fencing import Fence, advance_fence
    from payguard.locks.local import LocalBackend
    from payguard.locks.redis_backend import RedisBackend
    from payguard.locks.service import Lease, LockService
    from payguard.locks.sql import SqlBackend
    from payguard.outbox.dispatcher import OutboxDispatcher
    from payguard.outbox.transport import MailboxTransport, SmtpTransport, Transport
    from payguard.problems import STATUS_BY_CODE, http_status, problem, problem_details
    from payguard.store.tables import (
        Tables,
        create_tables,
        drop_tables,
        entries_sum_to_zero_ddl,
        tables,
    )
    from payguard.store.uow import Database, UnitOfWork
    from payguard.toolkit import Counters, Inbox, Ledger, Outbox, Sequences, connect
