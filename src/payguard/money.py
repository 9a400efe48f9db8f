"""Money is an integer count of minor units plus an ISO 4217 currency; floats never enter."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Money", "ensure_minor_units"]


def ensure_minor_units(value: object, *, name: str = "amount") -> int:
    """Return ``value`` if it is a true ``int`` (not a bool or float), else raise TypeError."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an integer number of minor units")
    return value


@dataclass(frozen=True, slots=True)
class Money:
    amount: int
    currency: str

    def __post_init__(self) -> None:
        ensure_minor_units(self.amount)
