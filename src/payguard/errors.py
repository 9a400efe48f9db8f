"""The payguard exception tree. Each error carries a machine-readable ``code`` and a
``title``, never an HTTP status: ``payguard.problems.STATUS_BY_CODE``, at the HTTP edge,
maps codes to statuses (shown below for the reader) for the service's ``payguard.api`` and
for applications.

    PayguardError
    ├── IdempotencyKeyMissing        400 IDEMPOTENCY_KEY_MISSING
    ├── IdempotencyKeyInvalid        400 IDEMPOTENCY_KEY_INVALID
    ├── InsufficientBalance          400 INSUFFICIENT_BALANCE
    ├── Unauthenticated              401 UNAUTHENTICATED
    ├── Forbidden                    403 FORBIDDEN
    ├── NotFound                     404 NOT_FOUND
    ├── Conflict                     409 CONFLICT
    │   ├── RequestInProgress        409 REQUEST_IN_PROGRESS   (retryable)
    │   ├── PaymentInProgress        409 PAYMENT_IN_PROGRESS   (retryable)
    │   ├── OutOfStock               409 OUT_OF_STOCK
    │   ├── ClassRepLimitReached     409 CLASS_REP_LIMIT_REACHED
    │   ├── AlreadyPurchased         409 ALREADY_PURCHASED
    │   └── InvalidState             409 INVALID_STATE
    ├── IdempotencyKeyReused         422 IDEMPOTENCY_KEY_REUSED
    ├── ValidationFailed             422 VALIDATION_ERROR
    ├── LimitReached                 429 LIMIT_REACHED         (retryable later)
    ├── LockTimeout                  503 LOCK_TIMEOUT          (retryable)
    ├── Overloaded                   503 OVERLOADED            (retryable)
    ├── ProviderUnavailable          503 PROVIDER_UNAVAILABLE  (retryable)
    ├── DatabaseUnavailable          503 DATABASE_UNAVAILABLE  (retryable)
    │   └── CommitOutcomeUnknown     503 COMMIT_OUTCOME_UNKNOWN (retry with the same key)
    └── LockNotOwned                 500 LOCK_NOT_OWNED        (a programming error)
"""

from __future__ import annotations

from typing import Any, ClassVar

__all__ = [
    "AlreadyPurchased",
    "ClassRepLimitReached",
    "CommitOutcomeUnknown",
    "Conflict",
    "DatabaseUnavailable",
    "Forbidden",
    "IdempotencyKeyInvalid",
    "IdempotencyKeyMissing",
    "IdempotencyKeyReused",
    "InsufficientBalance",
    "InvalidState",
    "LimitReached",
    "LockNotOwned",
    "LockTimeout",
    "NotFound",
    "OutOfStock",
    "Overloaded",
    "PayguardError",
    "PaymentInProgress",
    "ProviderUnavailable",
    "RequestInProgress",
    "Unauthenticated",
    "ValidationFailed",
]


class PayguardError(Exception):
    """Base of every error payguard raises on purpose."""

    code: ClassVar[str] = "INTERNAL_ERROR"
    title: ClassVar[str] = "Internal error"
    #: Seconds after which a retry may succeed; sent as ``Retry-After`` when set.
    retry_after: int | None = None

    def __init__(self, detail: str | None = None, *, retry_after: int | None = None,
                 **extra: Any) -> None:
        self.detail = detail or self.title
        if retry_after is not None:
            self.retry_after = retry_after
        self.extra = extra
        super().__init__(self.detail)


class IdempotencyKeyMissing(PayguardError):
    """A POST that requires ``Idempotency-Key`` came without one."""

    code, title = "IDEMPOTENCY_KEY_MISSING", "Idempotency-Key header required"


class IdempotencyKeyInvalid(PayguardError):
    """The key is empty, longer than 255 characters, or not printable ASCII."""

    code, title = "IDEMPOTENCY_KEY_INVALID", "Idempotency-Key is invalid"


class InsufficientBalance(PayguardError):
    """A debit would take a wallet below zero."""

    code, title = "INSUFFICIENT_BALANCE", "Insufficient balance"


class Unauthenticated(PayguardError):
    """No token, or a token nobody holds."""

    code, title = "UNAUTHENTICATED", "Authentication required"


class Forbidden(PayguardError):
    """A token on an endpoint it may not use (a user token on an admin endpoint, the admin
    token on a user endpoint); the detail says which."""

    code, title = "FORBIDDEN", "Forbidden"


class NotFound(PayguardError):
    """Unknown id, or a resource that belongs to another user."""

    code, title = "NOT_FOUND", "Not found"


class Conflict(PayguardError):
    """A unique value (email, sku) is already taken."""

    code, title = "CONFLICT", "Conflict"


class RequestInProgress(Conflict):
    """The same idempotency key is still being processed."""

    code, title = "REQUEST_IN_PROGRESS", "A request with this idempotency key is in progress"
    retry_after = 1


class PaymentInProgress(Conflict):
    """Another request is creating a checkout for the same user and item."""

    code, title = "PAYMENT_IN_PROGRESS", "A checkout for this item is being created"
    retry_after = 1


class OutOfStock(Conflict):
    """Not enough unassigned stock items."""

    code, title = "OUT_OF_STOCK", "Out of stock"


class ClassRepLimitReached(Conflict):
    """Every class-rep seat of the program is taken or reserved."""

    code, title = "CLASS_REP_LIMIT_REACHED", "Class-rep limit reached"


class AlreadyPurchased(Conflict):
    """The user already has a completed purchase of this program."""

    code, title = "ALREADY_PURCHASED", "Already purchased"


class InvalidState(Conflict):
    """The purchase is not in a state that allows the action."""

    code, title = "INVALID_STATE", "Invalid state for this action"


class IdempotencyKeyReused(PayguardError):
    """The key was used before with a different method, path or body."""

    code, title = "IDEMPOTENCY_KEY_REUSED", "Idempotency-Key reused"


class ValidationFailed(PayguardError):
    """Malformed body or query; ``errors`` lists ``{loc, msg}``."""

    code, title = "VALIDATION_ERROR", "Validation error"


class LimitReached(PayguardError):
    """A per-user limit (pending checkouts, held stock, pending top-ups, idempotency keys
    per hour) is reached; ``Retry-After`` says when waiting helps."""

    code, title = "LIMIT_REACHED", "Limit reached"


class LockTimeout(PayguardError):
    """A lock could not be taken within its wait."""

    code, title = "LOCK_TIMEOUT", "Lock timeout"
    retry_after = 1


class Overloaded(PayguardError):
    """The process's write queue (the group-commit writer) is full."""

    code, title = "OVERLOADED", "Service overloaded"
    retry_after = 1


class ProviderUnavailable(PayguardError):
    """The payment provider failed, timed out, or its concurrency queue is full."""

    code, title = "PROVIDER_UNAVAILABLE", "Payment provider unavailable"
    retry_after = 2


class DatabaseUnavailable(PayguardError):
    """No writable database server could be reached (down, failing over, or read-only).

    Nothing of the request was committed: a retry (with the same ``Idempotency-Key``)
    is safe and runs it from the start.
    """

    code, title = "DATABASE_UNAVAILABLE", "Database unavailable"
    retry_after = 1
    #: False when COMMIT may have been sent (see ``CommitOutcomeUnknown``) or had applied:
    #: then the transaction must not be replayed by the server itself.
    nothing_committed: bool = True


class CommitOutcomeUnknown(DatabaseUnavailable):
    """The connection was lost while COMMIT was in flight: it may or may not have applied.

    Never guessed: a retry with the same ``Idempotency-Key`` replays the stored answer if
    the commit survived, or runs the request again if it did not.
    """

    code, title = "COMMIT_OUTCOME_UNKNOWN", "Commit outcome unknown"
    nothing_committed = False


class LockNotOwned(PayguardError):
    """Release or extend of a lease by someone who does not hold it."""

    code, title = "LOCK_NOT_OWNED", "Lock not owned"
