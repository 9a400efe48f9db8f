"""Keyset (cursor) paging, newest first, over a (timestamp, id) pair.

A cursor is ``{epoch microseconds}.{id}`` of the last row of a page: the next page is the
rows strictly older than it, ties on the timestamp broken by the id. It stays correct while
rows are inserted (they land on the first page), and costs one index range scan per page
whatever the depth, unlike ``OFFSET``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import ColumnElement, and_, or_

from payguard.clock import as_utc
from payguard.errors import ValidationFailed

__all__ = ["CURSOR_PATTERN", "SERIAL_CURSOR_PATTERN", "Cursor", "parse_cursor", "parse_serial"]

# Matched whole (``re.fullmatch``); ids are ``new_id`` strings or integer keys.
CURSOR_PATTERN = r"^[0-9]{1,17}\.[A-Za-z0-9_-]{1,255}$"
SERIAL_CURSOR_PATTERN = r"^[0-9]{1,18}$"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class Cursor:
    at: datetime
    id: str

    @classmethod
    def after(cls, at: datetime, row_id: Any) -> str:
        """The cursor that continues below the row ``(at, row_id)``."""
        delta = as_utc(at) - _EPOCH
        micros = (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds
        return f"{micros}.{row_id}"

    def older(self, at_col: ColumnElement[Any], id_col: ColumnElement[Any]
              ) -> ColumnElement[bool]:
        """Rows after this cursor in (at desc, id desc) order."""
        return or_(at_col < self.at, and_(at_col == self.at, id_col < self.id))


def _invalid(field: str) -> ValidationFailed:
    return ValidationFailed(f"{field} is not a valid cursor",
                            errors=[{"loc": ["query", field], "msg": "not a cursor"}])


def parse_cursor(raw: str | None, field: str = "cursor") -> Cursor | None:
    if raw is None:
        return None
    if not re.fullmatch(CURSOR_PATTERN, raw):
        raise _invalid(field)
    micros, _, row_id = raw.partition(".")
    try:
        at = datetime.fromtimestamp(int(micros) // 1_000_000, UTC).replace(
            microsecond=int(micros) % 1_000_000)
    except (OverflowError, ValueError, OSError):
        raise _invalid(field) from None
    return Cursor(at, row_id)


def parse_serial(raw: str | None, field: str = "cursor") -> int | None:
    """A cursor over an integer key (newest first: continue below it)."""
    if raw is None:
        return None
    if not re.fullmatch(SERIAL_CURSOR_PATTERN, raw):
        raise _invalid(field)
    return int(raw)
