"""Program pricing: full price less the class-rep and early-bird discounts, never below 0."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from payguard.clock import as_utc

__all__ = ["Pricing", "price_program"]


@dataclass(frozen=True, slots=True)
class Pricing:
    full_price: int
    class_rep_discount: int
    early_bird_discount: int

    @property
    def final_price(self) -> int:
        return max(0, self.full_price - self.class_rep_discount - self.early_bird_discount)


def price_program(program: Any, *, class_rep: bool, now: datetime) -> Pricing:
    deadline = as_utc(program.early_bird_deadline)
    early = deadline is not None and now < deadline
    return Pricing(
        full_price=int(program.full_price),
        class_rep_discount=int(program.class_rep_discount) if class_rep else 0,
        early_bird_discount=int(program.early_bird_discount) if early else 0,
    )
