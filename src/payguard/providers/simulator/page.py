"""The hosted payment page: plain HTML forms, so it works without any JavaScript."""

from __future__ import annotations

from html import escape
from typing import Any

__all__ = ["format_amount", "render_page"]

_ZERO_DECIMAL = frozenset({"bif", "clp", "djf", "gnf", "jpy", "kmf", "krw", "mga", "pyg",
                           "rwf", "ugx", "vnd", "vuv", "xaf", "xof", "xpf"})


def format_amount(amount: int, currency: str) -> str:
    if currency.lower() in _ZERO_DECIMAL:
        return f"{amount:,} {currency.upper()}"
    return f"{amount // 100:,}.{amount % 100:02d} {currency.upper()}"


def _button(session_id: str, outcome: str, label: str) -> str:
    return (f'<form method="post" action="{escape(session_id)}/pay">'
            f'<input type="hidden" name="outcome" value="{outcome}">'
            f'<button type="submit" name="o" value="{outcome}">{escape(label)}</button></form>')


def render_page(session: dict[str, Any], items: list[dict[str, Any]], *,
                declined: bool = False) -> str:
    sid = session["id"]
    rows = "".join(
        f"<li>{escape(str(i['description']))} &times; {int(i['quantity'])}: "
        f"{format_amount(int(i['unit_amount']) * int(i['quantity']), i['currency'])}</li>"
        for i in items
    )
    if session["status"] == "open":
        notice = '<p class="declined">Your card was declined. Try again.</p>' if declined else ""
        actions = (notice + _button(sid, "succeeded", "Pay")
                   + _button(sid, "failed", "Decline")
                   + "<details><summary>Delayed payment methods</summary>"
                   + _button(sid, "async_succeeded", "Pay later: succeeds")
                   + _button(sid, "async_failed", "Pay later: fails")
                   + "</details>")
        if session.get("cancel_url"):
            actions += f'<p><a href="{escape(session["cancel_url"])}">Cancel</a></p>'
    else:
        actions = f"<p>This checkout session is {escape(session['status'])}.</p>"
    total = format_amount(int(session["amount_total"]), session["currency"])
    return (
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>Pay "
        f"{escape(total)}</title><style>body{{font-family:sans-serif;max-width:28em;"
        "margin:3em auto}}button{font-size:1.1em;margin:.3em 0;padding:.4em 1.2em}"
        ".declined{color:#b00}</style></head><body>"
        f"<h1>Simulated checkout</h1><p class=\"amount\">Total: <strong>{escape(total)}"
        f"</strong></p><ul>{rows}</ul><p>Session <code>{escape(sid)}</code>: "
        f"{escape(session['status'])} / {escape(session['payment_status'])}</p>"
        f"{actions}</body></html>"
    )
