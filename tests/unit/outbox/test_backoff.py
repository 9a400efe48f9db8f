from __future__ import annotations

import pytest

from payguard.outbox.backoff import backoff_delay


@pytest.mark.parametrize(("attempts", "ceiling"), [(1, 2.0), (2, 4.0), (3, 8.0), (10, 1024.0),
                                                   (12, 3600.0), (500, 3600.0)])
def test_delay_doubles_up_to_the_cap_with_jitter_in_upper_half(attempts: int,
                                                               ceiling: float) -> None:
    assert backoff_delay(attempts, rand=lambda: 0.0) == ceiling / 2
    assert backoff_delay(attempts, rand=lambda: 1.0) == ceiling
    for _ in range(50):
        assert ceiling / 2 <= backoff_delay(attempts) <= ceiling


def test_jitter_spreads_retries() -> None:
    assert len({backoff_delay(5) for _ in range(20)}) > 1


def test_attempts_are_one_based() -> None:
    with pytest.raises(ValueError):
        backoff_delay(0)
