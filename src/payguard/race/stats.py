"""Latency percentiles and outcome counts over a scenario's samples."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from payguard.race.types import Sample

__all__ = ["Summary", "outcome_label", "percentile", "summarize"]


def percentile(values: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile (the value at rank ceil(pct/100 * n)); 0.0 for no values.

    Nearest-rank never invents a latency nobody saw, which interpolation would.
    """
    if not values:
        return 0.0
    if not 0 <= pct <= 100:
        raise ValueError(f"percentile must be within 0..100, got {pct}")
    ordered = sorted(values)
    rank = max(1, math.ceil(pct / 100 * len(ordered)))
    return ordered[rank - 1]


def outcome_label(sample: Sample) -> str:
    if sample.status == 0:
        return "no response"
    return f"{sample.status} {sample.code}" if sample.code else str(sample.status)


@dataclass(frozen=True)
class Summary:
    requests: int
    retries: int
    outcomes: dict[str, int]
    throughput: float  # requests per second over the firing window
    p50: float
    p95: float
    p99: float
    max: float
    # Latency percentiles per operation (e.g. "webhook" alone in a webhook storm), ms.
    by_op: dict[str, dict[str, float]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "by_op": self.by_op,
            "requests": self.requests,
            "retries": self.retries,
            "outcomes": self.outcomes,
            "throughput_rps": round(self.throughput, 1),
            "latency_ms": {
                "p50": round(self.p50 * 1000, 1),
                "p95": round(self.p95 * 1000, 1),
                "p99": round(self.p99 * 1000, 1),
                "max": round(self.max * 1000, 1),
            },
        }


def summarize(samples: Sequence[Sample], duration: float) -> Summary:
    latencies = [s.latency for s in samples]
    counts = Counter(f"{s.op}: {outcome_label(s)}" for s in samples)
    return Summary(
        requests=len(samples),
        retries=sum(s.attempts - 1 for s in samples),
        outcomes=dict(sorted(counts.items())),
        throughput=len(samples) / duration if duration > 0 else 0.0,
        p50=percentile(latencies, 50),
        p95=percentile(latencies, 95),
        p99=percentile(latencies, 99),
        max=max(latencies, default=0.0),
        by_op={op: {"requests": len(lat), "p50": round(percentile(lat, 50) * 1000, 1),
                    "p99": round(percentile(lat, 99) * 1000, 1),
                    "max": round(max(lat) * 1000, 1)}
               for op, lat in _by_op(samples).items()},
    )


def _by_op(samples: Sequence[Sample]) -> dict[str, list[float]]:
    grouped: dict[str, list[float]] = {}
    for s in samples:
        grouped.setdefault(s.op, []).append(s.latency)
    return dict(sorted(grouped.items()))
