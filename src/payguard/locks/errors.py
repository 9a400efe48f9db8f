"""Errors specific to the lock service (the shared ones live in ``payguard.errors``).

    PayguardError
    ├── LockTimeout                  503 LOCK_TIMEOUT            (payguard.errors)
    ├── LockBackendUnavailable       503 LOCK_TIMEOUT            the backend cannot be reached
    ├── StaleFencingToken            409 STALE_FENCING_TOKEN     a write carried an old token
    └── LockNotOwned                 500 LOCK_NOT_OWNED          (payguard.errors)
"""

from __future__ import annotations

from payguard.errors import PayguardError

__all__ = ["LockBackendConfigError", "LockBackendUnavailable", "StaleFencingToken"]


class StaleFencingToken(PayguardError):
    """A write under a lock carried a fencing token older than one the resource has seen."""

    code, title = "STALE_FENCING_TOKEN", "Stale fencing token"
    retry_after = 1


class LockBackendUnavailable(PayguardError):
    """The lock backend (Redis, the database) cannot be reached.

    Not a ``LockTimeout``: nobody holds the key, so code that treats "taken" as an answer
    (a checkout's ``PAYMENT_IN_PROGRESS``) must not read an outage as one. API clients see
    the contract's ``LOCK_TIMEOUT`` code with a ``Retry-After``; the class and the detail
    say what really happened.
    """

    code, title = "LOCK_TIMEOUT", "Lock backend unavailable"
    retry_after = 2


class LockBackendConfigError(ValueError):
    """The configured lock backend cannot work with this deployment (e.g. local + workers)."""
