"""The hosted payment page: plain HTML forms, so it works without any JavaScript.

It is served on the service's own origin (``/sim``), next to the dashboard, so it is held
to the same rules: every value escaped, a strict CSP that runs no script at all, no
framing, no sniffing, and links or redirects only to http(s) URLs the session was created
with.
"""

from __future__ import annotations

import base64
import hashlib
import re
from html import escape
from typing import Any
from urllib.parse import urlsplit

__all__ = [
    "MAX_URL_LENGTH",
    "format_amount",
    "is_web_url",
    "page_headers",
    "render_error_page",
    "render_page",
    "return_urls",
    "success_redirect",
]

MAX_URL_LENGTH = 2048
_HOST = re.compile(r"^[A-Za-z0-9.-]+$|^\[[0-9A-Fa-f:.]+\]$")

_STYLE = ("body{font-family:sans-serif;max-width:28em;margin:3em auto}"
          "button{font-size:1.1em;margin:.3em 0;padding:.4em 1.2em}.declined{color:#b00}")
# The one inline style is allowed by its hash; no script runs on these pages.
_STYLE_HASH = base64.b64encode(hashlib.sha256(_STYLE.encode()).digest()).decode()


def is_web_url(value: object) -> bool:
    """An absolute http(s) URL with a plain host: no ``javascript:``, ``data:``, no
    whitespace or control characters, nothing a CSP header or a Location could choke on."""
    if not isinstance(value, str) or not 0 < len(value) <= MAX_URL_LENGTH:
        return False
    if any(c.isspace() or ord(c) < 0x20 or ord(c) == 0x7F or c in "\"'<>`" for c in value):
        return False
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 (raises on a malformed port)
    except ValueError:
        return False
    netloc_host = parts.netloc.rpartition("@")[2]
    host = netloc_host.rsplit(":", 1)[0] if not netloc_host.endswith("]") else netloc_host
    return parts.scheme in ("http", "https") and bool(host) and bool(_HOST.match(host))


def _origin(url: str) -> str | None:
    if not is_web_url(url):
        return None
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}"


def return_urls(session: dict[str, Any]) -> tuple[str, ...]:
    """The origins the page may send the customer to: its success and cancel URLs."""
    found = (_origin(str(session.get(k) or "")) for k in ("success_url", "cancel_url"))
    return tuple(sorted({o for o in found if o}))


def success_redirect(session: dict[str, Any]) -> str:
    """Where paying sends the customer: the session's own success URL, with Stripe's
    ``{CHECKOUT_SESSION_ID}`` template filled in."""
    url = str(session["success_url"])
    if not is_web_url(url):  # stored before URLs were checked: refuse to redirect
        raise ValueError("the session's success_url is not an http(s) URL")
    return url.replace("{CHECKOUT_SESSION_ID}", str(session["id"]))


def page_headers(form_targets: tuple[str, ...] = ()) -> dict[str, str]:
    """The dashboard's strict headers. ``form-action`` lists the origins the pay form may
    end up at (browsers apply it to the redirect after the POST)."""
    targets = " ".join(("'self'", *form_targets))
    return {
        "Cache-Control": "no-store",
        "X-Content-Type-Options": "nosniff",
        "X-Frame-Options": "DENY",
        "Referrer-Policy": "no-referrer",
        "Content-Security-Policy": (
            f"default-src 'none'; style-src 'sha256-{_STYLE_HASH}'; img-src 'self'; "
            f"base-uri 'none'; form-action {targets}; frame-ancestors 'none'"
        ),
    }


def render_error_page(message: str) -> str:
    return (f"<!doctype html><html><head><meta charset=\"utf-8\"><title>Checkout</title>"
            f"<style>{_STYLE}</style></head><body><p>{escape(message)}</p></body></html>")

_ZERO_DECIMAL = frozenset({"bif", "clp", "djf", "gnf", "jpy", "kmf", "krw", "mga", "pyg",
                           "rwf", "ugx", "vnd", "vuv", "xaf", "xof", "xpf"})


def format_amount(amount: int, currency: str) -> str:
    if currency.lower() in _ZERO_DECIMAL:
        return f"{amount:,} {currency.upper()}"
    return f"{amount // 100:,}.{amount % 100:02d} {currency.upper()}"


def _button(session_id: str, outcome: str, label: str) -> str:
    return (f'<form method="post" action="{escape(session_id)}/pay">'
            f'<input type="hidden" name="outcome" value="{escape(outcome)}">'
            f'<button type="submit" name="o" value="{escape(outcome)}">{escape(label)}'
            '</button></form>')


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
        if is_web_url(session.get("cancel_url")):
            actions += f'<p><a href="{escape(session["cancel_url"])}">Cancel</a></p>'
    else:
        actions = f"<p>This checkout session is {escape(session['status'])}.</p>"
    total = format_amount(int(session["amount_total"]), session["currency"])
    return (
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>Pay "
        f"{escape(total)}</title><style>{_STYLE}</style></head><body>"
        f"<h1>Simulated checkout</h1><p class=\"amount\">Total: <strong>{escape(total)}"
        f"</strong></p><ul>{rows}</ul><p>Session <code>{escape(sid)}</code>: "
        f"{escape(session['status'])} / {escape(session['payment_status'])}</p>"
        f"{actions}</body></html>"
    )
