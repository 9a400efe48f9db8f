"""Time in one place, so tests can reason about it and everything is timezone-aware UTC."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import overload

__all__ = ["as_utc", "isoformat", "utcnow"]


def utcnow() -> datetime:
    return datetime.now(UTC)


@overload
def as_utc(value: datetime) -> datetime: ...
@overload
def as_utc(value: None) -> None: ...
def as_utc(value: datetime | None) -> datetime | None:
    """Aware UTC. SQLite hands timestamps back naive; payguard only ever stores UTC."""
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


def isoformat(value: datetime | None) -> str | None:
    """RFC 3339 in UTC with a ``Z`` suffix; naive values (SQLite) are taken as UTC."""
    if value is None:
        return None
    return as_utc(value).astimezone(UTC).isoformat().replace("+00:00", "Z")
