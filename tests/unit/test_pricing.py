"""Program pricing: class-rep and early-bird discounts, the deadline edge, never below 0."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import pytest

from payguard.service.pricing import Pricing, price_program

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def _program(*, full: int = 120_000, rep: int = 30_000, early: int = 15_000,
             deadline: datetime | None = NOW + timedelta(days=1)) -> SimpleNamespace:
    return SimpleNamespace(full_price=full, class_rep_discount=rep, early_bird_discount=early,
                           early_bird_deadline=deadline)


@pytest.mark.parametrize(("class_rep", "deadline", "expected"), [
    (False, None, (120_000, 0, 0, 120_000)),
    (True, None, (120_000, 30_000, 0, 90_000)),
    (False, NOW + timedelta(seconds=1), (120_000, 0, 15_000, 105_000)),
    (True, NOW + timedelta(days=3), (120_000, 30_000, 15_000, 75_000)),
    (True, NOW, (120_000, 30_000, 0, 90_000)),  # the deadline itself is too late
    (True, NOW - timedelta(days=1), (120_000, 30_000, 0, 90_000)),
])
def test_discounts(class_rep: bool, deadline: datetime | None,
                   expected: tuple[int, int, int, int]) -> None:
    p = price_program(_program(deadline=deadline), class_rep=class_rep, now=NOW)
    assert (p.full_price, p.class_rep_discount, p.early_bird_discount, p.final_price) == expected


def test_a_naive_deadline_is_read_as_utc() -> None:
    naive = (NOW + timedelta(hours=1)).replace(tzinfo=None)  # as SQLite returns it
    assert price_program(_program(deadline=naive), class_rep=False, now=NOW).final_price == 105_000


def test_discounts_larger_than_the_price_give_zero_not_a_negative_price() -> None:
    p = price_program(_program(full=10_000, rep=8_000, early=5_000), class_rep=True, now=NOW)
    assert p.final_price == 0
    assert Pricing(100, 0, 0).final_price == 100
