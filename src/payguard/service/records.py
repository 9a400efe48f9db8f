"""A purchase as a typed record: what one row of the ``purchases`` table holds."""

from __future__ import annotations

from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any

from payguard.states import PurchaseStatus

__all__ = ["PurchaseRecord"]


@dataclass(frozen=True, slots=True)
class PurchaseRecord:
    """The columns of ``purchases`` (``store/schema.py``), with the state as an enum.

    Built from a row read back (``from_row``) or, by the wallet purchase, from the values
    it has just inserted, so the views render one typed shape whatever its source.
    """

    id: str
    user_id: str
    order_number: str
    kind: str
    status: PurchaseStatus
    payment_method: str
    item_key: str
    quantity: int
    amount: int
    currency: str
    full_price: int
    created_at: datetime
    updated_at: datetime
    product_id: str | None = None
    program_id: str | None = None
    class_rep_discount: int = 0
    early_bird_discount: int = 0
    is_class_rep: bool = False
    receipt_number: str | None = None
    provider_session_id: str | None = None
    provider_payment_intent: str | None = None
    checkout_url: str | None = None
    card_brand: str | None = None
    card_last4: str | None = None
    billing_name: str | None = None
    billing_email: str | None = None
    failure_reason: str | None = None
    expires_at: datetime | None = None
    completed_at: datetime | None = None
    refunded_at: datetime | None = None
    refund_status: str | None = None
    refund_id: str | None = None
    next_check_at: datetime | None = None
    check_attempts: int = 0

    @classmethod
    def from_row(cls, row: Any) -> PurchaseRecord:
        """From a ``purchases`` row (or a mapping of its columns). Integers and booleans
        are normalised (SQLite hands back 0/1 for booleans); times are kept as read."""
        values = dict(row._mapping) if hasattr(row, "_mapping") else dict(row)
        record = {name: values[name] for name in _FIELDS if name in values}
        record["status"] = PurchaseStatus(record["status"])
        for name in _INTS:
            if record.get(name) is not None:
                record[name] = int(record[name])
        record["is_class_rep"] = bool(record.get("is_class_rep", False))
        return cls(**record)


_FIELDS = tuple(f.name for f in fields(PurchaseRecord))
_INTS = ("quantity", "amount", "full_price", "class_rep_discount", "early_bird_discount",
         "check_attempts")
