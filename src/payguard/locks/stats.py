"""Plain counters of one ``LockService`` (this process), for the admin view and /metrics."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["LockCounters"]


@dataclass(slots=True)
class LockCounters:
    acquired_total: int = 0
    released_total: int = 0
    timeouts_total: int = 0
    lost_total: int = 0
    renewals_total: int = 0
    wait_seconds_total: float = 0.0
    wait_seconds_max: float = 0.0
    #: Leases taken through this service and not yet released.
    active: int = 0

    def acquired(self, waited: float) -> None:
        self.acquired_total += 1
        self.active += 1
        self.wait_seconds_total += waited
        self.wait_seconds_max = max(self.wait_seconds_max, waited)

    def released(self) -> None:
        self.released_total += 1
        self.active -= 1

    @property
    def avg_wait_ms(self) -> float:
        if not self.acquired_total:
            return 0.0
        return round(self.wait_seconds_total / self.acquired_total * 1000, 3)

    @property
    def max_wait_ms(self) -> float:
        return round(self.wait_seconds_max * 1000, 3)
