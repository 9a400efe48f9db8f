"""The harness's own arithmetic: percentiles, receipt series, Stripe signatures."""

from __future__ import annotations

import hashlib
import hmac

import pytest

from payguard.race.numbers import check_contiguous, check_unique, parse_receipt
from payguard.race.stats import percentile, summarize
from payguard.race.types import Sample
from payguard.race.webhooks import event, sign


def test_nearest_rank_percentiles() -> None:
    values = [float(v) for v in range(1, 101)]  # 1..100
    assert percentile(values, 50) == 50.0
    assert percentile(values, 95) == 95.0
    assert percentile(values, 99) == 99.0
    assert percentile(values, 100) == 100.0
    assert percentile([3.0, 1.0, 2.0], 50) == 2.0
    assert percentile([], 50) == 0.0
    with pytest.raises(ValueError):
        percentile([1.0], 101)


def test_summary_counts_outcomes_and_retries() -> None:
    samples = [Sample("buy", 201, None, 0.1), Sample("buy", 201, None, 0.3, attempts=3),
               Sample("buy", 400, "INSUFFICIENT_BALANCE", 0.2), Sample("buy", 0, None, 1.0)]
    s = summarize(samples, duration=2.0)
    assert s.outcomes == {"buy: 201": 2, "buy: 400 INSUFFICIENT_BALANCE": 1,
                          "buy: no response": 1}
    assert (s.requests, s.retries, s.throughput, s.max) == (4, 2, 2.0, 1.0)


def test_receipt_series_split_by_year() -> None:
    assert parse_receipt("SC2026000001") == ("SC2026", 1)
    assert parse_receipt("R-17") == ("R-", 17)
    # A new year restarts at 1: a second series, not a gap.
    assert check_contiguous(["SC2026000041", "SC2026000042", "SC2027000001"]).held


def test_contiguity_and_uniqueness_report_the_evidence() -> None:
    gap = check_contiguous(["SC2026000001", "SC2026000002", "SC2026000005"])
    assert not gap.held and "2 missing" in gap.evidence and "3, 4" in gap.evidence
    dup = check_unique(["SC2026000001", "SC2026000001", "SC2026000002"])
    assert not dup.held and "SC2026000001 x2" in dup.evidence
    assert check_unique(["A1", "A2"]).held
    assert not check_contiguous([]).held


def test_signature_is_stripes_scheme() -> None:
    event_id, body = event("checkout.session.completed", {"id": "cs_1"})
    assert event_id.startswith("evt_") and b'"cs_1"' in body
    header = sign("whsec_x", body, timestamp=1_700_000_000)
    t, v1 = header.split(",")
    expected = hmac.new(b"whsec_x", b"1700000000." + body, hashlib.sha256).hexdigest()
    assert t == "t=1700000000" and v1 == f"v1={expected}"
