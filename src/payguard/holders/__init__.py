"""Holder liveness: which process holds a claim or a lock, and whether it is still alive.

Every payguard process registers a ``holders`` row and renews its ``heartbeat_at`` several
times per ``PAYGUARD_HOLDER_LEASE``. What a process holds records its holder id, so the
rest of the cluster can tell "the holder died" (heartbeat older than the lease: take over
within seconds) from "the holder is alive but slow" (wait for the lock timeout).

- ``store``: the table primitives (register, beat, retire, the liveness predicate).
- ``heartbeat``: ``Heartbeat``, the per-process renewal loop.
"""

from payguard.holders.heartbeat import Heartbeat, new_holder_id
from payguard.holders.store import beat, holder_alive, holder_dead, purge_stale, register, retire

__all__ = [
    "Heartbeat",
    "beat",
    "holder_alive",
    "holder_dead",
    "new_holder_id",
    "purge_stale",
    "register",
    "retire",
]
