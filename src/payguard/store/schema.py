"""The tables, as SQLAlchemy Core metadata. Invariants live here as constraints.

Every invariant the service promises is guarded by the database, not only by Python:
balances can't go below zero, seats can't pass their limit, numbers can't repeat, a stock
item can't be assigned twice, an event id can't be applied twice, and a user can't hold
two pending checkouts (or two completed purchases) of one program.

The primitives' tables (ledger, counters, sequences, idempotency keys, locks, inbox,
outbox) are defined once, in ``payguard.store.tables``; the service's schema is that bundle
without a prefix (``PRIMITIVES``), plus the service's own tables below.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    ForeignKey,
    Index,
    Integer,
    String,
    Table,
    Text,
    UniqueConstraint,
    text,
)

from payguard.states import PurchaseStatus
from payguard.store.tables import TS, BigId, Tables, build_tables, new_metadata

__all__ = [
    "PRIMITIVES",
    "accounts",
    "capacities",
    "entries",
    "fences",
    "holders",
    "idempotency_keys",
    "inbox_events",
    "lock_epochs",
    "lock_leases",
    "metadata",
    "outbox_messages",
    "products",
    "programs",
    "purchases",
    "receipts",
    "reservations",
    "sequences",
    "stock_items",
    "transfers",
    "users",
]


def _sql_list(values: type[PurchaseStatus]) -> str:
    """An enum's values as a SQL list of string literals, for a CHECK."""
    return ", ".join(f"'{v.value}'" for v in values)


metadata = new_metadata()

users = Table(
    "users",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("email", String(320), nullable=False, unique=True),
    Column("name", String(200)),
    # sha256 of the bearer token: the token itself is shown once and never stored.
    Column("token_hash", String(64), nullable=False, unique=True),
    Column("created_at", TS, nullable=False),
)

# The primitives' tables, defined once for the service and for applications (with a prefix).
PRIMITIVES: Tables = build_tables(metadata, owner_fk="users.id")
accounts = PRIMITIVES.accounts
transfers = PRIMITIVES.transfers
entries = PRIMITIVES.entries
capacities = PRIMITIVES.capacities
reservations = PRIMITIVES.reservations
sequences = PRIMITIVES.sequences
idempotency_keys = PRIMITIVES.idempotency_keys
lock_leases = PRIMITIVES.lock_leases
fences = PRIMITIVES.fences
lock_epochs = PRIMITIVES.lock_epochs
holders = PRIMITIVES.holders
inbox_events = PRIMITIVES.inbox_events
outbox_messages = PRIMITIVES.outbox_messages

products = Table(
    "products",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("sku", String(100), nullable=False, unique=True),
    Column("name", String(200), nullable=False),
    Column("price", BigInteger, nullable=False),
    Column("currency", String(3), nullable=False),
    Column("created_at", TS, nullable=False),
    CheckConstraint("price >= 0", name="price_not_negative"),
)

# A digital good (licence key, account). `purchase_id` set = reserved or delivered;
# a partial unique index is not needed because one row can carry only one purchase.
stock_items = Table(
    "stock_items",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("product_id", String(40), ForeignKey("products.id"), nullable=False),
    Column("value", Text, nullable=False),
    Column("state", String(10), nullable=False, server_default="available"),
    Column("purchase_id", String(40)),
    Column("assigned_at", TS),
    CheckConstraint("state IN ('available', 'reserved', 'assigned')", name="state_known"),
    CheckConstraint(
        "(state = 'available') = (purchase_id IS NULL)", name="purchase_iff_taken"
    ),
    UniqueConstraint("product_id", "value", name="uq_stock_items_product_value"),
    Index("ix_stock_items_product_state", "product_id", "state", "id"),
    Index("ix_stock_items_purchase", "purchase_id"),
)

programs = Table(
    "programs",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("title", String(200), nullable=False),
    Column("full_price", BigInteger, nullable=False),
    Column("currency", String(3), nullable=False),
    Column("class_rep_limit", Integer, nullable=False),
    Column("class_rep_discount", BigInteger, nullable=False, server_default="0"),
    Column("early_bird_discount", BigInteger, nullable=False, server_default="0"),
    Column("early_bird_deadline", TS),
    Column("capacity_key", String(100), ForeignKey("capacities.key"), nullable=False),
    Column("created_at", TS, nullable=False),
    CheckConstraint("full_price >= 0", name="full_price_not_negative"),
    CheckConstraint("class_rep_limit >= 0", name="limit_not_negative"),
    CheckConstraint("class_rep_discount >= 0", name="rep_discount_not_negative"),
    CheckConstraint("early_bird_discount >= 0", name="eb_discount_not_negative"),
)

purchases = Table(
    "purchases",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("user_id", String(40), ForeignKey("users.id"), nullable=False),
    Column("order_number", String(40), nullable=False, unique=True),
    Column("kind", String(10), nullable=False),
    Column("status", String(10), nullable=False),
    Column("payment_method", String(10), nullable=False),
    # What is bought, as one comparable key: "product:<id>", "program:<id>", "topup".
    Column("item_key", String(100), nullable=False),
    Column("product_id", String(40), ForeignKey("products.id")),
    Column("program_id", String(40), ForeignKey("programs.id")),
    Column("quantity", Integer, nullable=False, server_default="1"),
    Column("amount", BigInteger, nullable=False),
    Column("currency", String(3), nullable=False),
    Column("full_price", BigInteger, nullable=False),
    Column("class_rep_discount", BigInteger, nullable=False, server_default="0"),
    Column("early_bird_discount", BigInteger, nullable=False, server_default="0"),
    Column("is_class_rep", Boolean, nullable=False, server_default=text("false")),
    Column("receipt_number", String(40), unique=True),
    Column("provider_session_id", String(255), unique=True),
    Column("provider_payment_intent", String(255)),
    Column("checkout_url", Text),
    Column("card_brand", String(20)),
    Column("card_last4", String(4)),
    Column("billing_name", String(200)),
    Column("billing_email", String(320)),
    Column("failure_reason", Text),
    Column("expires_at", TS),
    Column("created_at", TS, nullable=False),
    Column("updated_at", TS, nullable=False),
    Column("completed_at", TS),
    Column("refunded_at", TS),
    # Card refunds go through the provider after the refund is booked: "pending" until the
    # provider confirms, retried by the reconciler; "done" with the provider's refund id.
    Column("refund_status", String(10)),
    Column("refund_id", String(255)),
    # Reconciler bookkeeping: when to look at a stuck purchase next, and how often it did.
    Column("next_check_at", TS),
    Column("check_attempts", Integer, nullable=False, server_default="0"),
    CheckConstraint("kind IN ('product', 'program', 'topup')", name="kind_known"),
    CheckConstraint(f"status IN ({_sql_list(PurchaseStatus)})", name="status_known"),
    CheckConstraint("payment_method IN ('wallet', 'card')", name="method_known"),
    CheckConstraint("quantity > 0", name="quantity_positive"),
    CheckConstraint("amount >= 0", name="amount_not_negative"),
    CheckConstraint("refund_status IS NULL OR refund_status IN ('pending', 'done')",
                    name="refund_status_known"),
    Index("ix_purchases_refund_status", "refund_status"),
    Index("ix_purchases_user_created", "user_id", "created_at"),
    Index("ix_purchases_status_created", "status", "created_at"),
    # Never two pending checkouts of one item for one user, whatever the app does.
    Index(
        "uq_purchases_one_pending_checkout",
        "user_id",
        "item_key",
        unique=True,
        postgresql_where=text(f"status = '{PurchaseStatus.PENDING}'"),
        sqlite_where=text(f"status = '{PurchaseStatus.PENDING}'"),
    ),
    # A program is bought at most once per user.
    Index(
        "uq_purchases_program_once",
        "user_id",
        "program_id",
        unique=True,
        postgresql_where=text(f"status = '{PurchaseStatus.COMPLETED}' AND program_id IS NOT NULL"),
        sqlite_where=text(f"status = '{PurchaseStatus.COMPLETED}' AND program_id IS NOT NULL"),
    ),
)

receipts = Table(
    "receipts",
    metadata,
    Column("number", String(40), primary_key=True),
    Column("series", String(40), nullable=False),
    Column("period", String(20), nullable=False),
    Column("seq", BigInteger, nullable=False),
    Column("purchase_id", String(40), ForeignKey("purchases.id"), nullable=False, unique=True),
    Column("amount", BigInteger, nullable=False),
    Column("currency", String(3), nullable=False),
    Column("issued_at", TS, nullable=False),
    UniqueConstraint("series", "period", "seq", name="uq_receipts_series_period_seq"),
)
