"""Order and receipt numbers from the gapless per-year sequences."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncConnection

from payguard import sequences
from payguard.config import Settings
from payguard.store.schema import receipts

__all__ = ["ORDER_SERIES", "RECEIPT_SERIES", "issue_receipt", "next_order_number"]

RECEIPT_SERIES = "receipt"
ORDER_SERIES = "order"


async def next_order_number(conn: AsyncConnection, settings: Settings, now: datetime) -> str:
    seq = await sequences.next_value(conn, ORDER_SERIES, str(now.year))
    return sequences.format_number(settings.order_format, at=now, seq=seq)


async def take_receipt_number(conn: AsyncConnection, settings: Settings,
                              now: datetime) -> tuple[str, int]:
    """The next receipt number and its sequence value, in the caller's transaction.

    Take it as late as possible: the sequence row stays locked from here to commit, and
    every payment of the year queues on it.
    """
    seq = await sequences.next_value(conn, RECEIPT_SERIES, str(now.year))
    return sequences.format_number(settings.receipt_format, at=now, seq=seq), seq


async def record_receipt(conn: AsyncConnection, *, number: str, seq: int, purchase_id: str,
                         amount: int, currency: str, now: datetime) -> None:
    await conn.execute(insert(receipts).values(
        number=number, series=RECEIPT_SERIES, period=str(now.year), seq=seq,
        purchase_id=purchase_id, amount=amount, currency=currency, issued_at=now,
    ))


async def issue_receipt(conn: AsyncConnection, settings: Settings, *, purchase_id: str,
                        amount: int, currency: str, now: datetime) -> str:
    """Take the next receipt number and write the receipt for an existing purchase."""
    number, seq = await take_receipt_number(conn, settings, now)
    await record_receipt(conn, number=number, seq=seq, purchase_id=purchase_id,
                         amount=amount, currency=currency, now=now)
    return number


def format_next(settings: Settings, series: str, period: str, last_value: int) -> str | None:
    fmt = {RECEIPT_SERIES: settings.receipt_format, ORDER_SERIES: settings.order_format}.get(series)
    if fmt is None:
        return None
    return fmt.format(year=int(period), month=1, seq=last_value + 1)
