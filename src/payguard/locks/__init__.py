"""Locks with fencing tokens: one interface over local (asyncio), SQL and Redis backends.

    svc = create_lock_service(settings, database)
    async with svc.hold("checkout:u1:p9", ttl=30, wait=2) as lease:
        ...  # lease.fencing_token, lease.extend(), lease.lost
"""

from payguard.locks.errors import (
    LockBackendConfigError,
    LockBackendUnavailable,
    StaleFencingToken,
)
from payguard.locks.factory import choose_backend, create_lock_service
from payguard.locks.fencing import Fence
from payguard.locks.service import Lease, LockService

__all__ = [
    "Fence",
    "Lease",
    "LockBackendConfigError",
    "LockBackendUnavailable",
    "LockService",
    "StaleFencingToken",
    "choose_backend",
    "create_lock_service",
]
