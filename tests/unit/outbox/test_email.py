from __future__ import annotations

import pytest

from payguard.outbox import confirmation_email, format_money


@pytest.mark.parametrize(("amount", "currency", "text"), [
    (1234, "USD", "12.34 USD"),
    (5, "usd", "0.05 USD"),
    (0, "EUR", "0.00 EUR"),
    (-250, "USD", "-2.50 USD"),
    (500, "JPY", "500 JPY"),
    (1234567, "KWD", "1234.567 KWD"),
    (100_000_000, "USD", "1000000.00 USD"),
])
def test_format_money_uses_the_currency_minor_unit(amount: int, currency: str,
                                                   text: str) -> None:
    assert format_money(amount, currency) == text


@pytest.mark.parametrize("bad", [12.34, True, "12"])
def test_format_money_refuses_non_integers(bad: object) -> None:
    with pytest.raises(TypeError):
        format_money(bad, "USD")  # type: ignore[arg-type]


PROGRAM = {
    "order_number": "ORD2026000007", "receipt_number": "SC2026000003", "kind": "program",
    "amount": 8500, "currency": "USD", "full_price": 10000, "class_rep_discount": 1000,
    "early_bird_discount": 500, "quantity": 1, "items": [],
}


def test_confirmation_email_states_numbers_and_pricing() -> None:
    subject, body = confirmation_email(PROGRAM, user_email="ann@example.com", user_name="Ann")
    assert subject == "Payment confirmed: order ORD2026000007, receipt SC2026000003"
    assert body.splitlines()[0] == "Hello Ann,"
    assert "Order number:   ORD2026000007" in body
    assert "Receipt number: SC2026000003" in body
    assert "Full price:           100.00 USD" in body
    assert "Class-rep discount:  -10.00 USD" in body
    assert "Early-bird discount: -5.00 USD" in body
    assert "Total paid:           85.00 USD" in body
    assert "Your items" not in body


def test_confirmation_email_lists_items_and_hides_zero_discounts() -> None:
    product = {**PROGRAM, "kind": "product", "currency": "JPY", "amount": 3000,
               "full_price": 3000, "class_rep_discount": 0, "early_bird_discount": 0,
               "quantity": 2, "items": ["KEY-1", "KEY-2"]}
    _subject, body = confirmation_email(product, user_email="bo@example.com", user_name=None)
    assert body.splitlines()[0] == "Hello bo@example.com,"
    assert "Product x 2" in body
    assert "Total paid:           3000 JPY" in body
    assert "discount" not in body
    assert "  - KEY-1\n  - KEY-2" in body
