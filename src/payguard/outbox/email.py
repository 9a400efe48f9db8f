"""The confirmation email's text: pure formatting, no I/O.

It is rendered inside the fulfilment transaction from the purchase row, so the email says
exactly what was committed (order number, receipt number, pricing) and nothing computed later.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["confirmation_email", "format_money", "minor_unit_exponent"]

# ISO 4217 currencies whose minor unit is not 1/100. Everything else has two decimals.
_EXPONENTS: dict[str, int] = {
    **dict.fromkeys(
        ["BIF", "CLP", "DJF", "GNF", "ISK", "JPY", "KMF", "KRW", "PYG", "RWF", "UGX",
         "UYI", "VND", "VUV", "XAF", "XOF", "XPF"],
        0,
    ),
    **dict.fromkeys(["BHD", "IQD", "JOD", "KWD", "LYD", "OMR", "TND"], 3),
    **dict.fromkeys(["CLF", "UYW"], 4),
}

_KIND_LABELS = {"product": "Product", "program": "Program", "topup": "Wallet top-up"}


def minor_unit_exponent(currency: str) -> int:
    """Decimal places of ``currency``'s minor unit (JPY 0, USD 2, KWD 3)."""
    return _EXPONENTS.get(currency.upper(), 2)


def format_money(amount: int, currency: str) -> str:
    """``1234, "USD"`` -> ``"12.34 USD"``; ``500, "JPY"`` -> ``"500 JPY"``. Integer math only."""
    if isinstance(amount, bool) or not isinstance(amount, int):
        raise TypeError("amount must be an integer number of minor units")
    code = currency.upper()
    exp = minor_unit_exponent(code)
    sign = "-" if amount < 0 else ""
    units, frac = divmod(abs(amount), 10**exp)
    text = f"{units}.{frac:0{exp}d}" if exp else str(units)
    return f"{sign}{text} {code}"


def confirmation_email(purchase: Mapping[str, Any], *, user_email: str,
                       user_name: str | None) -> tuple[str, str]:
    """``(subject, body)`` of the purchase confirmation, plain text.

    ``purchase`` carries ``order_number, receipt_number, kind, amount, currency, full_price,
    class_rep_discount, early_bird_discount, quantity, items``; amounts in minor units.
    """
    currency = str(purchase["currency"])
    order_number = str(purchase["order_number"])
    receipt_number = purchase.get("receipt_number") or "n/a"

    def money(key: str) -> str:
        return format_money(int(purchase.get(key) or 0), currency)

    kind = str(purchase.get("kind") or "")
    lines = [
        f"Hello {user_name or user_email},",
        "",
        "Thank you for your purchase. Your payment is complete.",
        "",
        f"Order number:   {order_number}",
        f"Receipt number: {receipt_number}",
        f"Purchase:       {_KIND_LABELS.get(kind, kind)} x {int(purchase.get('quantity') or 1)}",
        "",
        "Pricing",
        f"  Full price:           {money('full_price')}",
    ]
    # Only the discounts that applied: a "-0.00 USD" line reads like an error.
    if int(purchase.get("class_rep_discount") or 0):
        lines.append(f"  Class-rep discount:  -{money('class_rep_discount')}")
    if int(purchase.get("early_bird_discount") or 0):
        lines.append(f"  Early-bird discount: -{money('early_bird_discount')}")
    lines.append(f"  Total paid:           {money('amount')}")
    items = [str(i) for i in (purchase.get("items") or [])]
    if items:
        lines += ["", "Your items"] + [f"  - {item}" for item in items]
    lines += ["", "Keep this email as your confirmation.", ""]
    subject = f"Payment confirmed: order {order_number}, receipt {receipt_number}"
    return subject, "\n".join(lines)
