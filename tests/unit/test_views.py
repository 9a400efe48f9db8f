"""Rows rendered as the API's resource shapes: money as ints, times as RFC 3339 UTC."""

from __future__ import annotations

from dataclasses import fields
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

import pytest

from payguard.service.records import PurchaseRecord
from payguard.service.views import product_view, program_view, purchase_view, receipt_view
from payguard.states import PurchaseStatus
from payguard.store.schema import purchases

AT = datetime(2026, 3, 1, 12, 30, tzinfo=UTC)


def _purchase(**changes: Any) -> PurchaseRecord:
    """As read from the database: a row's mapping (SQLite gives naive times, ints for bools)."""
    values: dict[str, Any] = dict(
        id="pur_1", user_id="usr_1", order_number="ORD2026000001", kind="program",
        status="completed", payment_method="card", item_key="program:prg_1",
        product_id=None, program_id="prg_1",
        quantity=1, amount=75_000, currency="USD", full_price=120_000,
        class_rep_discount=30_000, early_bird_discount=15_000, is_class_rep=1,
        receipt_number="SC2026000001", provider_session_id="cs_1", checkout_url="http://x",
        card_brand="visa", card_last4="4242", failure_reason=None, expires_at=None,
        created_at=AT, updated_at=AT, completed_at=AT.replace(tzinfo=None), refunded_at=None,
        refund_status=None, refund_id=None, next_check_at=None, check_attempts=0)
    values.update(changes)
    return PurchaseRecord.from_row(values)


def test_purchase_view_has_the_contract_fields() -> None:
    record = _purchase()
    assert record.status is PurchaseStatus.COMPLETED  # a typed state, not a bare string
    assert record.is_class_rep is True  # SQLite's 1, normalised
    view = purchase_view(record, ["KEY-1"])
    assert view["status"] == "completed" and type(view["status"]) is str
    assert view["pricing"] == {"full_price": 120_000, "class_rep_discount": 30_000,
                               "early_bird_discount": 15_000, "final_price": 75_000}
    assert view["card"] == {"brand": "visa", "last4": "4242"}
    assert view["is_class_rep"] is True and view["items"] == ["KEY-1"]
    assert view["created_at"] == "2026-03-01T12:30:00Z"
    assert view["completed_at"] == "2026-03-01T12:30:00Z"  # a naive time is UTC
    assert view["expires_at"] is None and view["refunded_at"] is None
    for name in ("id", "order_number", "kind", "status", "payment_method", "quantity",
                 "amount", "currency", "receipt_number", "provider_session_id"):
        assert name in view


def test_a_record_refuses_an_unknown_state_and_covers_every_column() -> None:
    with pytest.raises(ValueError, match="'paid' is not a valid PurchaseStatus"):
        _purchase(status="paid")
    columns = set(purchases.c.keys())
    assert {f.name for f in fields(PurchaseRecord)} == columns
    # Only the schema's columns are taken from a row (a join adds others).
    assert _purchase(user_email="a@t.test").id == "pur_1"


def test_every_state_renders_as_its_contract_string() -> None:
    assert [s.value for s in PurchaseStatus] == [
        "pending", "completed", "failed", "canceled", "expired", "refunded"]
    for state in PurchaseStatus:
        assert purchase_view(_purchase(status=state.value), [])["status"] == state.value


def test_purchase_view_without_a_card_says_null() -> None:
    view = purchase_view(_purchase(payment_method="wallet", card_brand=None, card_last4=None),
                         [])
    assert view["card"] is None and view["items"] == []


def test_product_program_and_receipt_views() -> None:
    product = SimpleNamespace(id="prd_1", sku="S", name="N", price=1500, currency="USD",
                              created_at=AT)
    assert product_view(product, 7) == {"id": "prd_1", "sku": "S", "name": "N", "price": 1500,
                                        "currency": "USD", "stock": 7,
                                        "created_at": "2026-03-01T12:30:00Z"}
    program = SimpleNamespace(id="prg_1", title="T", full_price=100, currency="EUR",
                              class_rep_limit=3, class_rep_discount=10,
                              early_bird_discount=5, early_bird_deadline=None, created_at=AT)
    view = program_view(program, 2)
    assert (view["class_rep_limit"], view["class_rep_taken"]) == (3, 2)
    assert view["early_bird_deadline"] is None
    receipt = SimpleNamespace(number="SC2026000001", purchase_id="pur_1", amount=75_000,
                              currency="USD", issued_at=AT)
    assert receipt_view(receipt) == {"number": "SC2026000001", "purchase_id": "pur_1",
                                     "amount": 75_000, "currency": "USD",
                                     "issued_at": "2026-03-01T12:30:00Z"}
