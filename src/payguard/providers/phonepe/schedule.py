"""PhonePe's recommended order-status polling schedule, as a pure function.

PhonePe asks merchants whose order is still ``PENDING`` to check its status: first 20-25 s
after the payment was started, then every 3 s for 30 s, every 6 s for the next 60 s, every
10 s for the next 60 s, every 30 s for the next 60 s, and then once a minute until the order
reaches a final state or expires. ``scale`` shrinks (or stretches) every delay alike, so
tests can run the same schedule in a fraction of the time.
"""

from __future__ import annotations

__all__ = ["STEPS", "next_poll_delay"]

#: (for this many seconds after the first check, poll every this many seconds)
STEPS: tuple[tuple[float, float], ...] = ((30, 3), (60, 6), (60, 10), (60, 30))
FINAL_EVERY = 60.0


def next_poll_delay(since_first_check: float, *, scale: float = 1.0) -> float:
    """Seconds until the next check, ``since_first_check`` seconds after the first one
    (both in real seconds; the schedule's own seconds are multiplied by ``scale``)."""
    elapsed = max(0.0, since_first_check / scale)
    window_end = 0.0
    for length, every in STEPS:
        window_end += length
        if elapsed < window_end:
            return every * scale
    return FINAL_EVERY * scale
