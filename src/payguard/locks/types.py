"""The contract between ``LockService`` and its backends."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

__all__ = ["Grant", "HeldLock", "LockBackend"]


@dataclass(frozen=True, slots=True)
class Grant:
    """A successful acquisition: the fencing token and the expiry (epoch ms, backend clock).

    ``requested_at`` is ``time.monotonic()`` when the successful attempt was sent: the
    lease runs out no later than ``requested_at + ttl`` on this machine's clock.
    """

    fencing_token: int
    expires_at_ms: int
    requested_at: float


@dataclass(frozen=True, slots=True)
class HeldLock:
    """One lease the backend currently considers held (for the admin view)."""

    key: str
    fencing_token: int
    expires_at_ms: int


class LockBackend(Protocol):
    """A lock store. ``owner`` is a random per-lease token; only it may release or extend."""

    name: str

    async def acquire(self, key: str, owner: str, ttl_ms: int, wait: float) -> Grant | None:
        """Take ``key`` for ``owner`` within ``wait`` seconds (0: one try); None when it
        could not. Raises ``LockBackendUnavailable`` when the store cannot be reached."""
        ...

    async def release(self, key: str, owner: str) -> bool:
        """Release if ``owner`` holds ``key``; False (nothing changed) otherwise."""
        ...

    async def extend(self, key: str, owner: str, ttl_ms: int) -> int | None:
        """Push the expiry of an unexpired lease of ``owner`` to now + ttl; the new expiry
        (epoch ms) or None when the lease is not (or no longer) held by ``owner``."""
        ...

    async def held(self) -> list[HeldLock]:
        """Currently held, unexpired leases, ordered by key."""
        ...

    async def healthy(self) -> bool: ...

    async def clean_expired(self) -> int: ...

    async def close(self) -> None: ...
