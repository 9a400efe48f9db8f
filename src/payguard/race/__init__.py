"""``payguard race``: fire concurrent requests at the HTTP API and prove its invariants.

The harness is a pure HTTP client of the contract in API.md: it creates its own users,
products and programs through the admin API, races requests, then checks invariants from
the responses, from end-state reads and from ``GET /api/admin/audit``.
"""

from __future__ import annotations

from payguard.race.runner import run_race, run_race_async
from payguard.race.scenarios import ORDER as SCENARIOS
from payguard.race.types import (
    Invariant,
    RaceConfig,
    RaceReport,
    Sample,
    ScenarioResult,
    ScenarioStatus,
)

__all__ = [
    "SCENARIOS",
    "Invariant",
    "RaceConfig",
    "RaceReport",
    "Sample",
    "ScenarioResult",
    "ScenarioStatus",
    "run_race",
    "run_race_async",
]
