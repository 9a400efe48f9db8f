"""Receipt numbers: uniqueness and contiguity, per series (one series per year prefix)."""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from collections.abc import Iterable

from payguard.race.types import Invariant

__all__ = ["check_contiguous", "check_unique", "parse_receipt"]

_TRAILING_DIGITS = re.compile(r"^(.*?)(\d+)$")


def parse_receipt(number: str) -> tuple[str, int]:
    """Split a receipt number into (series, sequence).

    The default format ``SC{year}{seq:06d}`` ends in one digit run (``2026000001``): when the
    run is longer than six digits and starts with a plausible year, the year belongs to the
    series, so that a new year starting at 1 is a new series, not a gap.
    """
    match = _TRAILING_DIGITS.match(number)
    if match is None:
        raise ValueError(f"receipt number {number!r} does not end in digits")
    prefix, digits = match.groups()
    if len(digits) > 6 and digits[:2] in ("19", "20"):
        return prefix + digits[:4], int(digits[4:])
    return prefix, int(digits)


def check_unique(numbers: Iterable[str], name: str = "receipt numbers unique") -> Invariant:
    counts = Counter(numbers)
    dupes = {n: c for n, c in counts.items() if c > 1}
    if not dupes:
        return Invariant(name, True, f"{len(counts)} distinct receipt numbers")
    shown = ", ".join(f"{n} x{c}" for n, c in sorted(dupes.items())[:8])
    more = f" (+{len(dupes) - 8} more)" if len(dupes) > 8 else ""
    extra = sum(counts.values()) - len(counts)
    return Invariant(name, False, f"{extra} duplicate receipts: {shown}{more}")


def check_contiguous(
    numbers: Iterable[str], name: str = "receipt numbers contiguous"
) -> Invariant:
    """Within each series the distinct sequences form one run without a gap."""
    series: dict[str, set[int]] = defaultdict(set)
    try:
        for number in numbers:
            prefix, seq = parse_receipt(number)
            series[prefix].add(seq)
    except ValueError as exc:
        return Invariant(name, False, str(exc))
    if not series:
        return Invariant(name, False, "no receipt numbers were issued")
    problems: list[str] = []
    runs: list[str] = []
    for prefix, seqs in sorted(series.items()):
        lo, hi = min(seqs), max(seqs)
        missing = sorted(set(range(lo, hi + 1)) - seqs)
        runs.append(f"{prefix}: {lo}..{hi}")
        if missing:
            shown = ", ".join(str(m) for m in missing[:8])
            problems.append(f"{prefix}: {len(missing)} missing in {lo}..{hi} ({shown})")
    if problems:
        return Invariant(name, False, "; ".join(problems))
    return Invariant(name, True, "; ".join(runs))
