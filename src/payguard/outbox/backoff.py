"""Retry delays: exponential with full jitter, capped.

Full jitter (AWS architecture blog, "Exponential Backoff And Jitter") spreads retries of
many messages that failed together (an SMTP outage) instead of stampeding the server the
moment it returns.
"""

from __future__ import annotations

import random
from collections.abc import Callable

__all__ = ["backoff_delay"]


def backoff_delay(attempts: int, *, base: float = 2.0, cap: float = 3600.0,
                  rand: Callable[[], float] = random.random) -> float:
    """Seconds to wait after the ``attempts``-th failed attempt (1-based).

    Uniform in ``[ceiling / 2, ceiling]`` with ``ceiling = min(cap, base * 2**(attempts-1))``:
    half-jitter keeps a floor so a retry never comes back immediately.
    """
    if attempts < 1:
        raise ValueError("attempts is 1-based")
    ceiling = min(cap, base * 2.0 ** min(attempts - 1, 62))
    return ceiling / 2 + rand() * ceiling / 2
