"""The states a purchase moves through, in one place for the schema, the service and the API.

    pending ──> completed ──> refunded
       │            ▲
       └──> failed | canceled | expired   (closed; a late payment may still complete it,
                                           or is refunded when its seat or items are gone)
"""

from __future__ import annotations

from enum import StrEnum

__all__ = ["CLOSED", "PAID", "PurchaseStatus"]


class PurchaseStatus(StrEnum):
    """A ``StrEnum``: each member is its own string, so it goes into SQL and JSON as is."""

    PENDING = "pending"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELED = "canceled"
    EXPIRED = "expired"
    REFUNDED = "refunded"


#: Closed without a payment: the seat or items went back.
CLOSED = frozenset({PurchaseStatus.FAILED, PurchaseStatus.CANCELED, PurchaseStatus.EXPIRED})
#: Paid (and possibly refunded since): a payment that arrives again changes nothing.
PAID = frozenset({PurchaseStatus.COMPLETED, PurchaseStatus.REFUNDED})
