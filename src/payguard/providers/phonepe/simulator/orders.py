"""The PhonePe simulator's objects: orders, payment attempts, refunds, OAuth tokens.

Pure functions over an open simulator transaction (:class:`Txn`); each raises
:class:`PhonePeApiError` for what PhonePe would refuse, and records the callbacks it owes
as events (delivered after the commit by the shared deliverer).
"""

from __future__ import annotations

import json
import secrets
from typing import Any, Literal

from payguard.providers.simulator.store import EventRecord, Txn

__all__ = [
    "OUTCOMES",
    "SCHEMA",
    "PhonePeApiError",
    "check_token",
    "create_order",
    "create_refund",
    "expire_due",
    "get_order",
    "get_refund",
    "issue_token",
    "pay_order",
]

Outcome = Literal["success", "failure", "pending"]
OUTCOMES = frozenset({"success", "failure", "pending"})
MERCHANT_ID = "PAYGUARDSIM"
TOKEN_TTL = 3600

SCHEMA = """
CREATE TABLE IF NOT EXISTS pp_orders (
    id TEXT PRIMARY KEY, state TEXT NOT NULL, expire_at INTEGER NOT NULL, data TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS pp_orders_state_expire ON pp_orders (state, expire_at);
CREATE TABLE IF NOT EXISTS pp_refunds (id TEXT PRIMARY KEY, data TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS pp_tokens (token TEXT PRIMARY KEY, expires_at INTEGER NOT NULL);
"""


class PhonePeApiError(Exception):
    """An error answer in PhonePe's JSON shape (the SDK parses ``code`` and ``message``)."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message

    def body(self) -> str:
        return json.dumps({"success": False, "code": self.code, "errorCode": self.code,
                           "message": self.message})


def _new(prefix: str) -> str:
    return prefix + secrets.token_hex(10).upper()


def issue_token(txn: Txn) -> dict[str, Any]:
    token = secrets.token_urlsafe(24)
    txn.conn.execute("DELETE FROM pp_tokens WHERE expires_at < ?", (txn.now,))
    txn.conn.execute("INSERT INTO pp_tokens (token, expires_at) VALUES (?, ?)",
                     (token, txn.now + TOKEN_TTL))
    return {"access_token": token, "encrypted_access_token": token, "token_type": "O-Bearer",
            "issued_at": txn.now, "expires_at": txn.now + TOKEN_TTL, "expires_in": TOKEN_TTL,
            "session_expires_at": txn.now + TOKEN_TTL,
            # PhonePe sends none; the SDK warns on a missing one (RuntimeWarning).
            "refresh_token": ""}


def check_token(txn: Txn, header: str) -> None:
    scheme, _, token = header.partition(" ")
    row = txn.conn.execute("SELECT expires_at FROM pp_tokens WHERE token = ?",
                           (token.strip(),)).fetchone()
    if scheme != "O-Bearer" or row is None or int(row[0]) < txn.now:
        raise PhonePeApiError(401, "AUTHORIZATION_FAILED", "Invalid or expired access token")


def _load(txn: Txn, merchant_order_id: str) -> dict[str, Any] | None:
    row = txn.conn.execute("SELECT data FROM pp_orders WHERE id = ?",
                           (merchant_order_id,)).fetchone()
    return json.loads(row[0]) if row else None


def _save(txn: Txn, order: dict[str, Any]) -> None:
    txn.conn.execute(
        "INSERT INTO pp_orders (id, state, expire_at, data) VALUES (?, ?, ?, ?) "
        "ON CONFLICT (id) DO UPDATE SET state = excluded.state, data = excluded.data",
        (order["merchantOrderId"], order["state"], order["expireAt"] // 1000, json.dumps(order)))


def _status_view(order: dict[str, Any]) -> dict[str, Any]:
    keys = ("merchantId", "merchantOrderId", "orderId", "state", "amount", "payableAmount",
            "feeAmount", "expireAt", "errorCode", "detailedErrorCode", "metaInfo",
            "paymentDetails")
    return {k: order[k] for k in keys if order.get(k) is not None}


def _callback(txn: Txn, kind: str, event: str, payload: dict[str, Any], about: str) -> None:
    body = json.dumps({"event": event, "type": kind, "payload": payload})
    txn.events.append(EventRecord(id=_new("CB"), type=kind, session_id=about, body=body))


def _order_callback(txn: Txn, order: dict[str, Any]) -> None:
    if order["state"] == "COMPLETED":
        _callback(txn, "PG_ORDER_COMPLETED", "checkout.order.completed", _status_view(order),
                  order["merchantOrderId"])
    elif order["state"] == "FAILED":
        _callback(txn, "PG_ORDER_FAILED", "checkout.order.failed", _status_view(order),
                  order["merchantOrderId"])


def expire_due(txn: Txn) -> None:
    """Orders still pending past their expiry fail, as on PhonePe (with a callback)."""
    rows = txn.conn.execute("SELECT data FROM pp_orders WHERE state = 'PENDING' AND "
                            "expire_at <= ? LIMIT 500", (txn.now,)).fetchall()
    if not rows:
        return
    txn.require_write()
    for (data,) in rows:
        order = json.loads(data)
        order.update(state="FAILED", errorCode="TXN_AUTO_FAILED",
                     detailedErrorCode="ORDER_EXPIRED")
        _save(txn, order)
        _order_callback(txn, order)


def create_order(txn: Txn, body: dict[str, Any], *, page_base: str) -> dict[str, Any]:
    """``POST /checkout/v2/pay``: one order per merchant order id. Repeating the same
    request answers the same order (so a retried call cannot make a second one); the same
    id with another amount is refused."""
    merchant_order_id = body.get("merchantOrderId")
    amount = body.get("amount")
    if not isinstance(merchant_order_id, str) or not merchant_order_id or len(
            merchant_order_id) > 63 or not all(c.isalnum() or c in "_-" for c in merchant_order_id):
        raise PhonePeApiError(400, "BAD_REQUEST", "merchantOrderId is invalid")
    if not isinstance(amount, int) or isinstance(amount, bool) or amount < 1:
        raise PhonePeApiError(400, "BAD_REQUEST", "amount must be a positive integer (paise)")
    flow = body.get("paymentFlow") or {}
    if flow.get("type") != "PG_CHECKOUT":
        raise PhonePeApiError(400, "BAD_REQUEST", "paymentFlow.type must be PG_CHECKOUT")
    order = _load(txn, merchant_order_id)
    if order is not None:
        if order["amount"] != amount:
            raise PhonePeApiError(400, "BAD_REQUEST",
                                  "merchantOrderId already used with another amount")
    else:
        txn.require_write()
        expire_after = body.get("expireAfter")
        seconds = expire_after if isinstance(expire_after, int) and expire_after > 0 else 1200
        order_id = _new("OMO")
        order = {
            "merchantId": MERCHANT_ID, "merchantOrderId": merchant_order_id,
            "orderId": order_id, "state": "PENDING", "amount": amount,
            "expireAt": (txn.now + seconds) * 1000, "metaInfo": body.get("metaInfo"),
            "paymentDetails": [],
            "redirectUrl": f"{page_base}/pay/{merchant_order_id}",
            "merchantRedirectUrl": (flow.get("merchantUrls") or {}).get("redirectUrl"),
        }
        _save(txn, order)
    return {"orderId": order["orderId"], "state": order["state"],
            "expireAt": order["expireAt"], "redirectUrl": order["redirectUrl"]}


def get_order(txn: Txn, merchant_order_id: str) -> dict[str, Any]:
    order = _load(txn, merchant_order_id)
    if order is None:
        raise PhonePeApiError(404, "ORDER_NOT_FOUND", f"No order {merchant_order_id}")
    return order


def order_status(txn: Txn, merchant_order_id: str) -> dict[str, Any]:
    return _status_view(get_order(txn, merchant_order_id))


def pay_order(txn: Txn, merchant_order_id: str, outcome: Outcome) -> dict[str, Any]:
    """The buyer on the hosted page: ``success``, ``failure``, or ``pending`` (the attempt
    stays pending, e.g. a UPI collect not yet approved; a later outcome settles it)."""
    order = get_order(txn, merchant_order_id)
    if order["state"] != "PENDING":
        raise PhonePeApiError(409, "ORDER_NOT_PENDING", f"order is {order['state']}")
    txn.require_write()
    attempts = order["paymentDetails"]
    if attempts and attempts[-1]["state"] == "PENDING":
        attempt = attempts[-1]
    else:
        attempt = {"transactionId": _new("OM"), "paymentMode": "UPI_QR",
                   "amount": order["amount"], "payableAmount": order["amount"],
                   "feeAmount": 0}
        attempts.append(attempt)
    attempt["timestamp"] = txn.now * 1000
    if outcome == "success":
        attempt["state"] = order["state"] = "COMPLETED"
    elif outcome == "failure":
        attempt["state"] = order["state"] = "FAILED"
        attempt["errorCode"] = order["errorCode"] = "PAYMENT_DECLINED"
    else:
        attempt["state"] = "PENDING"
    _save(txn, order)
    _order_callback(txn, order)
    return order


def create_refund(txn: Txn, body: dict[str, Any]) -> dict[str, Any]:
    """``POST /payments/v2/refund``, idempotent on ``merchantRefundId``. Accepted at once and
    completed straight after (``PG_REFUND_COMPLETED``)."""
    refund_id, amount = body.get("merchantRefundId"), body.get("amount")
    original = body.get("originalMerchantOrderId")
    if not isinstance(refund_id, str) or not refund_id or not isinstance(original, str):
        raise PhonePeApiError(400, "BAD_REQUEST", "merchantRefundId and "
                                                  "originalMerchantOrderId are required")
    if not isinstance(amount, int) or isinstance(amount, bool) or amount < 1:
        raise PhonePeApiError(400, "BAD_REQUEST", "amount must be a positive integer (paise)")
    row = txn.conn.execute("SELECT data FROM pp_refunds WHERE id = ?", (refund_id,)).fetchone()
    if row is not None:
        refund = json.loads(row[0])
        if (refund["originalMerchantOrderId"], refund["amount"]) != (original, amount):
            raise PhonePeApiError(400, "BAD_REQUEST", "merchantRefundId already used")
        return {"refundId": refund["refundId"], "amount": amount, "state": refund["state"]}
    order = get_order(txn, original)
    if order["state"] != "COMPLETED":
        raise PhonePeApiError(400, "BAD_REQUEST", f"order is {order['state']}, not COMPLETED")
    refunded = sum(int(json.loads(r[0])["amount"]) for r in txn.conn.execute(
        "SELECT data FROM pp_refunds WHERE json_extract(data, '$.originalMerchantOrderId') = ?",
        (original,)).fetchall())
    if refunded + amount > int(order["amount"]):
        raise PhonePeApiError(400, "BAD_REQUEST", "refund exceeds the order amount")
    txn.require_write()
    refund = {"merchantId": MERCHANT_ID, "merchantRefundId": refund_id,
              "originalMerchantOrderId": original, "refundId": _new("OMR"),
              "amount": amount, "state": "COMPLETED", "timestamp": txn.now * 1000}
    txn.conn.execute("INSERT INTO pp_refunds (id, data) VALUES (?, ?)",
                     (refund_id, json.dumps(refund)))
    _callback(txn, "PG_REFUND_COMPLETED", "pg.refund.completed", refund, original)
    return {"refundId": refund["refundId"], "amount": amount, "state": "PENDING"}


def get_refund(txn: Txn, merchant_refund_id: str) -> dict[str, Any]:
    row = txn.conn.execute("SELECT data FROM pp_refunds WHERE id = ?",
                           (merchant_refund_id,)).fetchone()
    if row is None:
        raise PhonePeApiError(404, "REFUND_NOT_FOUND", f"No refund {merchant_refund_id}")
    refund: dict[str, Any] = json.loads(row[0])
    return refund
