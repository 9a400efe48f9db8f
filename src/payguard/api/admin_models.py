"""Response models of the operator's (admin) views and of ``GET /api/session``.

They document the shapes in the OpenAPI schema and filter what leaves: a field that is
not declared here is not sent.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel

from payguard.api.schemas import PurchaseStatusField

__all__ = [
    "AdminProduct",
    "AdminProgram",
    "AdminPurchase",
    "AdminUser",
    "Email",
    "EmailPage",
    "IdempotencyKeyRecord",
    "LedgerEntry",
    "PurchaseDetail",
    "PurchasePage",
    "SessionInfo",
    "UserJournal",
    "UserPage",
    "WebhookEvent",
    "WebhookPage",
]



class SessionInfo(BaseModel):
    role: Literal["admin", "user"]
    id: str | None
    email: str | None
    name: str | None


class Card(BaseModel):
    brand: str | None
    last4: str | None


class Pricing(BaseModel):
    full_price: int
    class_rep_discount: int
    early_bird_discount: int
    final_price: int


class AdminPurchase(BaseModel):
    id: str
    user_id: str
    user_email: str | None
    user_name: str | None
    order_number: str
    kind: Literal["product", "program", "topup"]
    status: PurchaseStatusField
    payment_method: Literal["wallet", "card"]
    product_id: str | None
    program_id: str | None
    quantity: int
    amount: int
    currency: str
    pricing: Pricing
    is_class_rep: bool
    items: list[str]
    receipt_number: str | None
    provider_session_id: str | None
    card: Card | None
    failure_reason: str | None
    expires_at: str | None
    created_at: str
    completed_at: str | None
    refunded_at: str | None
    refund_status: str | None


class PurchasePage(BaseModel):
    purchases: list[AdminPurchase]
    next_cursor: str | None


class LedgerEntry(BaseModel):
    id: str
    transfer_id: str
    account_id: str
    account_kind: str
    owner_id: str | None
    amount: int
    balance_after: int
    currency: str
    kind: str
    reason: str | None
    created_at: str


class Receipt(BaseModel):
    number: str
    purchase_id: str
    amount: int
    currency: str
    issued_at: str


class StockItem(BaseModel):
    id: str
    value: str
    state: Literal["available", "reserved", "assigned"]
    assigned_at: str | None


class ProviderSession(BaseModel):
    session_id: str | None
    payment_intent: str | None
    checkout_url: str | None
    expires_at: str | None
    refund_status: str | None
    refund_id: str | None
    check_attempts: int
    next_check_at: str | None


class WebhookEvent(BaseModel):
    provider: str
    event_id: str
    type: str
    object_id: str | None
    outcome: str
    category: Literal["applied", "received", "failed"]
    deliveries: int
    duplicate: bool
    received_at: str
    last_received_at: str | None


class Email(BaseModel):
    id: str
    kind: str
    recipient: str
    subject: str
    state: Literal["pending", "sent", "dead"]
    attempts: int
    transport: str | None
    last_error: str | None
    purchase_id: str | None
    user_id: str | None
    created_at: str
    sent_at: str | None
    next_attempt_at: str | None


class IdempotencyKeyRecord(BaseModel):
    principal: str
    key: str
    method: str
    path: str
    state: str
    recovery_point: str
    status_code: int | None
    created_at: str
    expires_at: str


class PurchaseDetail(BaseModel):
    purchase: AdminPurchase
    ledger: list[LedgerEntry]
    receipt: Receipt | None
    items: list[StockItem]
    provider_session: ProviderSession
    webhook_events: list[WebhookEvent]
    emails: list[Email]
    idempotency_keys: list[IdempotencyKeyRecord]


class AdminUser(BaseModel):
    id: str
    email: str
    name: str | None
    created_at: str
    currency: str
    balance: int
    purchases: int | None = None


class UserPage(BaseModel):
    users: list[AdminUser]
    next_cursor: str | None


class WalletEntry(BaseModel):
    id: str
    amount: int
    balance_after: int
    kind: str
    purchase_id: str | None
    reason: str | None
    created_at: str


class UserJournal(BaseModel):
    user: AdminUser
    account_id: str
    entries: list[WalletEntry]
    next_cursor: str | None


class InboxCounts(BaseModel):
    events: int
    deliveries: int
    applied: int
    received: int
    failed: int
    duplicate: int


class WebhookPage(BaseModel):
    events: list[WebhookEvent]
    next_cursor: str | None
    counts: InboxCounts


class OutboxCounts(BaseModel):
    pending: int
    sent: int
    dead: int
    retrying: int


class EmailPage(BaseModel):
    messages: list[Email]
    next_cursor: str | None
    counts: OutboxCounts


class AdminProgram(BaseModel):
    id: str
    title: str
    full_price: int
    currency: str
    class_rep_limit: int
    class_rep_taken: int
    class_rep_discount: int
    early_bird_discount: int
    early_bird_deadline: str | None
    created_at: str
    seats_held: int
    seats_sold: int
    seats_left: int


class AdminProduct(BaseModel):
    id: str
    sku: str
    name: str
    price: int
    currency: str
    stock: int
    created_at: str
    items_available: int
    items_reserved: int
    items_assigned: int
    items_total: int
