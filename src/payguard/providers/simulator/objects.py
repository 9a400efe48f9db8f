"""Stripe objects and what happens to them: sessions, payment intents, charges, refunds, events.

Every function here runs inside one :class:`Txn` (one SQLite write transaction) and
raises :class:`StripeApiError` for what Stripe would refuse.
"""

from __future__ import annotations

import json
import secrets
import string
from typing import Any, Literal

from payguard.providers.simulator.errors import invalid, missing
from payguard.providers.simulator.page import is_web_url
from payguard.providers.simulator.store import EventRecord, Txn

__all__ = [
    "API_VERSION",
    "OUTCOMES",
    "create_refund",
    "create_session",
    "expand",
    "expire_due",
    "expire_session",
    "get_payment_intent",
    "get_session",
    "new_id",
    "pay_session",
]

API_VERSION = "2025-01-27.acacia"
Outcome = Literal["succeeded", "failed", "async_succeeded", "async_failed"]
OUTCOMES: frozenset[str] = frozenset({"succeeded", "failed", "async_succeeded", "async_failed"})
_ALNUM = string.ascii_letters + string.digits
_SESSION_PARAMS = frozenset({
    "mode", "line_items", "success_url", "cancel_url", "expires_at", "client_reference_id",
    "metadata", "customer_email", "payment_intent_data", "payment_method_types", "expand",
    "locale", "submit_type",
})
_REFUND_REASONS = frozenset({"duplicate", "fraudulent", "requested_by_customer"})
MAX_SESSION_LIFETIME = 24 * 3600


def new_id(prefix: str) -> str:
    return prefix + "".join(secrets.choice(_ALNUM) for _ in range(24))


def _int(name: str, value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        raise invalid(f"Invalid integer: {value}", param=name,
                      code="parameter_invalid_integer") from None


def _metadata(value: Any, param: str) -> dict[str, str]:
    if value is None or value == "":
        return {}
    if not isinstance(value, dict) or any(not isinstance(v, str) for v in value.values()):
        raise invalid("Invalid metadata: must be a hash of strings", param=param)
    if len(value) > 50 or any(len(k) > 40 or len(v) > 500 for k, v in value.items()):
        raise invalid("Metadata: at most 50 keys, keys up to 40 and values up to 500 "
                      "characters", param=param)
    return dict(value)


# ---- events -----------------------------------------------------------------------------

def emit_event(txn: Txn, type_: str, obj: dict[str, Any], session_id: str | None) -> None:
    event_id = new_id("evt_")
    event: dict[str, Any] = {
        "id": event_id,
        "object": "event",
        "api_version": API_VERSION,
        "created": txn.now,
        "data": {"object": obj},
        "livemode": False,
        "pending_webhooks": 1,
        "request": {"id": None, "idempotency_key": None},
        "type": type_,
    }
    body = json.dumps(event)
    txn.conn.execute(
        "INSERT INTO events (id, session_id, type, created, data) VALUES (?, ?, ?, ?, ?)",
        (event_id, session_id, type_, txn.now, body),
    )
    txn.events.append(EventRecord(event_id, type_, session_id, body))


# ---- sessions ---------------------------------------------------------------------------

def _save_session(
    txn: Txn, session: dict[str, Any], internal: dict[str, Any] | None = None
) -> None:
    if internal is None:
        txn.conn.execute(
            "UPDATE sessions SET status = ?, data = ? WHERE id = ?",
            (session["status"], json.dumps(session), session["id"]),
        )
    else:
        txn.conn.execute(
            "INSERT INTO sessions (id, status, expires_at, data, internal) VALUES (?, ?, ?, ?, ?)",
            (session["id"], session["status"], session["expires_at"], json.dumps(session),
             json.dumps(internal)),
        )


def _internal(txn: Txn, session_id: str) -> dict[str, Any]:
    row = txn.conn.execute("SELECT internal FROM sessions WHERE id = ?", (session_id,)).fetchone()
    result: dict[str, Any] = json.loads(row[0])
    return result


def _expire(txn: Txn, session: dict[str, Any]) -> dict[str, Any]:
    session.update(status="expired", url=None)
    _save_session(txn, session)
    emit_event(txn, "checkout.session.expired", session, session["id"])
    return session


def expire_due(txn: Txn) -> None:
    """Expire every open session past its ``expires_at`` (Stripe does this on its own)."""
    rows = txn.conn.execute(
        "SELECT data FROM sessions WHERE status = 'open' AND expires_at <= ?", (txn.now,)
    ).fetchall()
    if rows:
        txn.require_write()
    for (data,) in rows:
        _expire(txn, json.loads(data))


def _line_items(value: Any) -> tuple[list[dict[str, Any]], int, str]:
    if not isinstance(value, list) or not value:
        raise invalid("Missing required param: line_items.", param="line_items")
    items, total, currencies = [], 0, set()
    for i, item in enumerate(value):
        param = f"line_items[{i}]"
        if not isinstance(item, dict) or not isinstance(item.get("price_data"), dict):
            raise invalid("The simulator supports line items with price_data only.",
                          param=f"{param}[price_data]")
        price = item["price_data"]
        quantity = _int(f"{param}[quantity]", item.get("quantity", "1"))
        unit_amount = _int(f"{param}[price_data][unit_amount]", price.get("unit_amount"))
        currency = str(price.get("currency", "")).lower()
        product = price.get("product_data")
        name = product.get("name") if isinstance(product, dict) else None
        if quantity < 1 or unit_amount < 0:
            raise invalid("quantity must be >= 1 and unit_amount >= 0", param=param)
        if len(currency) != 3 or not currency.isalpha():
            raise invalid(f"Invalid currency: {currency}", param=f"{param}[price_data][currency]")
        if not name:
            raise invalid("Missing required param: product_data[name].",
                          param=f"{param}[price_data][product_data][name]")
        currencies.add(currency)
        total += quantity * unit_amount
        items.append({"description": name, "quantity": quantity, "unit_amount": unit_amount,
                      "currency": currency})
    if len(currencies) != 1:
        raise invalid("All line items must use the same currency.", param="line_items")
    if total < 1:
        raise invalid("The Checkout Session's total amount must be at least 1.",
                      param="line_items")
    return items, total, currencies.pop()


def create_session(txn: Txn, params: dict[str, Any]) -> dict[str, Any]:
    for name in params:
        if name not in _SESSION_PARAMS:
            raise invalid(f"Received unknown parameter: {name}", param=name,
                          code="parameter_unknown")
    if params.get("mode") != "payment":
        raise invalid("The simulator supports mode=payment only.", param="mode")
    items, total, currency = _line_items(params.get("line_items"))
    success_url = params.get("success_url")
    if not success_url:
        raise invalid("Missing required param: success_url.", param="success_url")
    for name in ("success_url", "cancel_url"):
        # The hosted page links and redirects to these: http(s) only, never javascript:.
        if params.get(name) is not None and not is_web_url(params[name]):
            raise invalid(f"Invalid URL: {name} must be an absolute http or https URL.",
                          param=name, code="url_invalid")
    default_expiry = txn.now + MAX_SESSION_LIFETIME
    expires_at = _int("expires_at", params.get("expires_at", default_expiry))
    # Stripe also demands at least 30 minutes; the simulator accepts any future time so
    # tests can watch sessions expire.
    if not txn.now < expires_at <= txn.now + MAX_SESSION_LIFETIME:
        raise invalid("expires_at must be in the future and at most 24 hours away.",
                      param="expires_at")
    reference = params.get("client_reference_id")
    if reference is not None and len(reference) > 200:
        raise invalid("client_reference_id is longer than 200 characters",
                      param="client_reference_id")
    pi_data = params.get("payment_intent_data") or {}
    pi_metadata = _metadata(pi_data.get("metadata") if isinstance(pi_data, dict) else None,
                            "payment_intent_data[metadata]")
    sid = new_id("cs_test_")
    session = {
        "id": sid,
        "object": "checkout.session",
        "amount_subtotal": total,
        "amount_total": total,
        "cancel_url": params.get("cancel_url"),
        "client_reference_id": reference,
        "created": txn.now,
        "currency": currency,
        "customer": None,
        "customer_details": None,
        "customer_email": params.get("customer_email") or None,
        "expires_at": expires_at,
        "livemode": False,
        "locale": params.get("locale"),
        "metadata": _metadata(params.get("metadata"), "metadata"),
        "mode": "payment",
        "payment_intent": None,
        "payment_method_types": ["card"],
        "payment_status": "unpaid",
        "status": "open",
        "success_url": success_url,
        "url": f"{txn.base_url}/checkout/{sid}",
    }
    _save_session(txn, session, {"line_items": items, "pi_metadata": pi_metadata})
    return session


def get_session(txn: Txn, session_id: str) -> dict[str, Any]:
    row = txn.conn.execute("SELECT data FROM sessions WHERE id = ?", (session_id,)).fetchone()
    if row is None:
        raise missing("checkout.session", session_id)
    session: dict[str, Any] = json.loads(row[0])
    return session


def session_line_items(txn: Txn, session_id: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = _internal(txn, session_id)["line_items"]
    return items


def expire_session(txn: Txn, session_id: str) -> dict[str, Any]:
    session = get_session(txn, session_id)
    if session["status"] != "open":
        raise invalid('Only Checkout Sessions with a status in ["open"] can be expired.',
                      code="checkout_session_not_open")
    return _expire(txn, session)


# ---- paying -----------------------------------------------------------------------------

def pay_session(
    txn: Txn, session_id: str, outcome: Outcome, *, card_brand: str = "visa",
    card_last4: str = "4242", name: str | None = None, email: str | None = None,
) -> dict[str, Any]:
    """What the hosted page does when the customer submits. See simulator/__init__ for
    the outcome semantics. Returns the session as it stands afterwards."""
    session = get_session(txn, session_id)
    if session["status"] != "open":
        raise invalid(f"This Checkout Session is {session['status']} and cannot be paid.",
                      code="checkout_session_not_open")
    customer = {"email": email or session["customer_email"] or "customer@example.com",
                "name": name or "Jenny Rosen"}
    pi = txn.get("payment_intents", session["payment_intent"] or "") or {
        "id": new_id("pi_"), "object": "payment_intent", "amount": session["amount_total"],
        "amount_received": 0, "currency": session["currency"], "created": txn.now,
        "livemode": False, "metadata": _internal(txn, session_id)["pi_metadata"],
        "payment_method_types": ["card"], "last_payment_error": None,
    }
    charge = {
        "id": new_id("ch_"), "object": "charge", "amount": pi["amount"], "amount_captured": 0,
        "amount_refunded": 0, "currency": pi["currency"], "created": txn.now,
        "payment_intent": pi["id"], "paid": False, "captured": False, "refunded": False,
        "billing_details": customer, "failure_code": None, "failure_message": None,
        "payment_method_details": {"type": "card", "card": {
            "brand": card_brand, "last4": card_last4, "exp_month": 12, "exp_year": 2034,
            "funding": "credit", "country": "US"}},
        "status": "pending",
    }
    pi["latest_charge"] = charge["id"]
    session["payment_intent"] = pi["id"]

    def settle(ok: bool) -> None:
        if ok:
            charge.update(status="succeeded", paid=True, captured=True,
                          amount_captured=charge["amount"])
            pi.update(status="succeeded", amount_received=pi["amount"], last_payment_error=None)
        else:
            charge.update(status="failed", failure_code="card_declined",
                          failure_message="Your card was declined.")
            pi.update(status="requires_payment_method", last_payment_error={
                "type": "card_error", "code": "card_declined", "decline_code": "generic_decline",
                "message": "Your card was declined.", "charge": charge["id"]})

    if outcome == "failed":
        # A declined card leaves the session open for another try, as on Stripe's page;
        # Stripe emits no checkout.session event for it, only payment_intent.payment_failed.
        settle(False)
        _store_payment(txn, pi, charge)
        _save_session(txn, session)
        emit_event(txn, "payment_intent.payment_failed", dict(pi), session_id)
        return session

    session.update(status="complete", url=None, customer_details=customer)
    if outcome == "succeeded":
        settle(True)
        session["payment_status"] = "paid"
        emit_event(txn, "checkout.session.completed", dict(session), session_id)
    else:
        # Delayed-notification payment: completed while still unpaid, then the verdict.
        pi["status"] = "processing"
        emit_event(txn, "checkout.session.completed", dict(session), session_id)
        ok = outcome == "async_succeeded"
        settle(ok)
        if ok:
            session["payment_status"] = "paid"
        emit_event(txn, "checkout.session.async_payment_succeeded" if ok
                   else "checkout.session.async_payment_failed", dict(session), session_id)
    _store_payment(txn, pi, charge)
    _save_session(txn, session)
    return session


def _store_payment(txn: Txn, pi: dict[str, Any], charge: dict[str, Any]) -> None:
    txn.put("payment_intents", pi)
    txn.put("charges", charge)


# ---- payment intents, refunds, expansion -----------------------------------------------

def get_payment_intent(txn: Txn, pi_id: str) -> dict[str, Any]:
    pi = txn.get("payment_intents", pi_id)
    if pi is None:
        raise missing("payment_intent", pi_id)
    return pi


def create_refund(txn: Txn, params: dict[str, Any]) -> dict[str, Any]:
    pi_id = params.get("payment_intent")
    if not pi_id:
        raise invalid("Missing required param: payment_intent.", param="payment_intent")
    pi = txn.get("payment_intents", str(pi_id))
    if pi is None:
        raise missing("payment_intent", str(pi_id), param="payment_intent")
    if pi.get("status") != "succeeded":
        raise invalid("This PaymentIntent does not have a successful charge to refund.",
                      param="payment_intent", code="charge_not_refundable")
    charge = txn.get("charges", pi["latest_charge"])
    assert charge is not None  # written together with the payment intent
    left = charge["amount_captured"] - charge["amount_refunded"]
    amount = _int("amount", params.get("amount", left))
    if amount < 1:
        raise invalid("Refund amount must be a positive integer.", param="amount",
                      code="parameter_invalid_integer")
    if left == 0:
        raise invalid(f"Charge {charge['id']} has already been refunded.",
                      code="charge_already_refunded")
    if amount > left:
        raise invalid(f"Refund amount ({amount}) is greater than unrefunded amount on "
                      f"charge ({left})", param="amount", code="amount_too_large")
    reason = params.get("reason")
    if reason is not None and reason not in _REFUND_REASONS:
        raise invalid(f"Invalid reason: {reason}", param="reason")
    refund = {
        "id": new_id("re_"), "object": "refund", "amount": amount, "charge": charge["id"],
        "created": txn.now, "currency": charge["currency"],
        "metadata": _metadata(params.get("metadata"), "metadata"),
        "payment_intent": pi["id"], "reason": reason, "status": "succeeded",
    }
    charge["amount_refunded"] += amount
    charge["refunded"] = charge["amount_refunded"] == charge["amount_captured"]
    txn.put("charges", charge)
    txn.conn.execute("INSERT INTO refunds (id, payment_intent, data) VALUES (?, ?, ?)",
                     (refund["id"], pi["id"], json.dumps(refund)))
    return refund


_TABLE_BY_PREFIX = {"pi_": "payment_intents", "ch_": "charges", "cs_": "sessions"}


def expand(txn: Txn, obj: dict[str, Any], paths: list[str]) -> dict[str, Any]:
    """Replace id strings by the objects they name, along dotted paths, like ``expand[]``."""
    for path in paths:
        head, _, rest = path.partition(".")
        value = obj.get(head)
        if isinstance(value, str):
            table = _TABLE_BY_PREFIX.get(value[:3])
            found = txn.get(table, value) if table else None
            if found is None:
                raise invalid(f"This property cannot be expanded ({path}).", param="expand")
            obj[head] = value = found
        if rest and isinstance(value, dict):
            expand(txn, value, [rest])
    return obj
