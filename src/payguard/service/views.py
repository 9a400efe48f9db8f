"""Rows rendered as the API's resource shapes (plain dicts, JSON-ready)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from payguard.clock import isoformat
from payguard.service.records import PurchaseRecord

__all__ = ["product_view", "program_view", "purchase_view", "receipt_view"]


def product_view(row: Any, stock: int) -> dict[str, Any]:
    return {
        "id": row.id, "sku": row.sku, "name": row.name, "price": int(row.price),
        "currency": row.currency, "stock": stock, "created_at": isoformat(row.created_at),
    }


def program_view(row: Any, taken: int) -> dict[str, Any]:
    return {
        "id": row.id, "title": row.title, "full_price": int(row.full_price),
        "currency": row.currency, "class_rep_limit": int(row.class_rep_limit),
        "class_rep_taken": taken, "class_rep_discount": int(row.class_rep_discount),
        "early_bird_discount": int(row.early_bird_discount),
        "early_bird_deadline": isoformat(row.early_bird_deadline),
        "created_at": isoformat(row.created_at),
    }


def purchase_view(row: PurchaseRecord, items: Sequence[str]) -> dict[str, Any]:
    card = None
    if row.card_brand or row.card_last4:
        card = {"brand": row.card_brand, "last4": row.card_last4}
    return {
        "id": row.id,
        "user_id": row.user_id,
        "order_number": row.order_number,
        "kind": row.kind,
        "status": row.status.value,
        "payment_method": row.payment_method,
        "product_id": row.product_id,
        "program_id": row.program_id,
        "quantity": int(row.quantity),
        "amount": int(row.amount),
        "currency": row.currency,
        "pricing": {
            "full_price": int(row.full_price),
            "class_rep_discount": int(row.class_rep_discount),
            "early_bird_discount": int(row.early_bird_discount),
            "final_price": int(row.amount),
        },
        "is_class_rep": bool(row.is_class_rep),
        "items": list(items),
        "receipt_number": row.receipt_number,
        "provider_session_id": row.provider_session_id,
        "checkout_url": row.checkout_url,
        "card": card,
        "failure_reason": row.failure_reason,
        "expires_at": isoformat(row.expires_at),
        "created_at": isoformat(row.created_at),
        "completed_at": isoformat(row.completed_at),
        "refunded_at": isoformat(row.refunded_at),
        "refund_status": row.refund_status,
    }


def receipt_view(row: Any) -> dict[str, Any]:
    return {
        "number": row.number, "purchase_id": row.purchase_id, "amount": int(row.amount),
        "currency": row.currency, "issued_at": isoformat(row.issued_at),
    }
