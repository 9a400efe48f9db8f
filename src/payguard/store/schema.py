"""The tables, as SQLAlchemy Core metadata. Invariants live here as constraints.

Every invariant the service promises is guarded by the database, not only by Python:
balances can't go below zero, seats can't pass their limit, numbers can't repeat, a stock
item can't be assigned twice, an event id can't be applied twice, and a user can't hold
two pending checkouts (or two completed purchases) of one program.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import (
    DDL,
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    UniqueConstraint,
    event,
    text,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator

__all__ = [
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

# Autoincrement integer keys: BigInteger on PostgreSQL, INTEGER (rowid) on SQLite.
BigId = BigInteger().with_variant(Integer(), "sqlite")

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(column_0_label)s",
        "uq": "uq_%(table_name)s_%(column_0_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

class UtcDateTime(TypeDecorator[datetime]):
    """A timestamp stored as UTC. SQLite keeps no offset: an aware value is converted to
    UTC before it is written (else ``+02:00`` would be dropped and the wall time kept);
    a naive value is taken to be UTC already, as everywhere in payguard."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is not None and value.tzinfo is not None:
            return value.astimezone(UTC)
        return value


TS = UtcDateTime()

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

# A ledger account. Wallets belong to a user; platform accounts (revenue, funding,
# card clearing) have no owner and may go negative, which is how double entry books
# money coming in from outside.
accounts = Table(
    "accounts",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("owner_id", String(40), ForeignKey("users.id")),
    Column("kind", String(20), nullable=False),
    Column("currency", String(3), nullable=False),
    Column("balance", BigInteger, nullable=False, server_default="0"),
    Column("allow_negative", Boolean, nullable=False, server_default=text("false")),
    Column("created_at", TS, nullable=False),
    CheckConstraint("allow_negative OR balance >= 0", name="balance_not_negative"),
    UniqueConstraint("owner_id", "kind", "currency", name="uq_accounts_owner_kind_currency"),
)

# One money movement: `amount` leaves `debit_account_id` and reaches `credit_account_id`.
transfers = Table(
    "transfers",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("kind", String(30), nullable=False),
    Column("amount", BigInteger, nullable=False),
    Column("currency", String(3), nullable=False),
    Column("debit_account_id", String(40), ForeignKey("accounts.id"), nullable=False),
    Column("credit_account_id", String(40), ForeignKey("accounts.id"), nullable=False),
    Column("purchase_id", String(40)),
    Column("reason", Text),
    Column("created_at", TS, nullable=False),
    CheckConstraint("amount > 0", name="amount_positive"),
    CheckConstraint("debit_account_id <> credit_account_id", name="two_accounts"),
)

# The immutable journal: two entries per transfer, summing to zero.
entries = Table(
    "entries",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("transfer_id", String(40), ForeignKey("transfers.id"), nullable=False),
    Column("account_id", String(40), ForeignKey("accounts.id"), nullable=False),
    Column("amount", BigInteger, nullable=False),
    Column("balance_after", BigInteger, nullable=False),
    Column("created_at", TS, nullable=False),
    CheckConstraint("amount <> 0", name="amount_nonzero"),
    Index("ix_entries_account_id_id", "account_id", "id"),
    Index("ix_entries_transfer_id", "transfer_id"),
)

# PostgreSQL: each transfer's entries must sum to zero, checked at commit (a constraint
# trigger, DEFERRABLE INITIALLY DEFERRED, as django-hordak does), so a hand-written or buggy
# journal insert cannot commit. SQLite has no deferred triggers; the audit checks it there.
ENTRIES_SUM_TO_ZERO = (
    """CREATE FUNCTION payguard_transfer_balanced() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    total numeric;
BEGIN
    SELECT COALESCE(SUM(amount), 0) INTO total FROM entries WHERE transfer_id = NEW.transfer_id;
    IF total <> 0 THEN
        RAISE EXCEPTION 'the entries of transfer % sum to %, not 0', NEW.transfer_id, total
            USING ERRCODE = 'check_violation';
    END IF;
    RETURN NULL;
END
$$""",
    """CREATE CONSTRAINT TRIGGER entries_sum_to_zero AFTER INSERT OR UPDATE ON entries
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION payguard_transfer_balanced()""",
)
for _statement in ENTRIES_SUM_TO_ZERO:
    event.listen(entries, "after_create",
                 DDL(_statement).execute_if(dialect="postgresql"))  # type: ignore[no-untyped-call]

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

# A capacity counter (class-rep seats, product stock): `taken` moves only through
# conditional single statements, and the CHECK makes overbooking impossible.
capacities = Table(
    "capacities",
    metadata,
    Column("key", String(100), primary_key=True),
    Column("limit", Integer, nullable=False),
    Column("taken", Integer, nullable=False, server_default="0"),
    CheckConstraint("taken >= 0", name="taken_not_negative"),
    CheckConstraint('taken <= "limit"', name="taken_within_limit"),
)

# A hold on a capacity for a purchase; `state` moves held -> kept | released exactly once.
reservations = Table(
    "reservations",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("capacity_key", String(100), ForeignKey("capacities.key"), nullable=False),
    Column("purchase_id", String(40), nullable=False),
    Column("quantity", Integer, nullable=False),
    Column("state", String(10), nullable=False, server_default="held"),
    Column("expires_at", TS),
    Column("created_at", TS, nullable=False),
    Column("updated_at", TS, nullable=False),
    CheckConstraint("quantity > 0", name="quantity_positive"),
    CheckConstraint("state IN ('held', 'kept', 'released')", name="state_known"),
    UniqueConstraint("capacity_key", "purchase_id", name="uq_reservations_capacity_purchase"),
    Index("ix_reservations_state_expires", "state", "expires_at"),
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
    CheckConstraint(
        "status IN ('pending', 'completed', 'failed', 'canceled', 'expired', 'refunded')",
        name="status_known",
    ),
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
        postgresql_where=text("status = 'pending'"),
        sqlite_where=text("status = 'pending'"),
    ),
    # A program is bought at most once per user.
    Index(
        "uq_purchases_program_once",
        "user_id",
        "program_id",
        unique=True,
        postgresql_where=text("status = 'completed' AND program_id IS NOT NULL"),
        sqlite_where=text("status = 'completed' AND program_id IS NOT NULL"),
    ),
)

# Named gapless counters; the row is locked by the increment until the transaction ends,
# so a rollback gives the number back.
sequences = Table(
    "sequences",
    metadata,
    Column("series", String(40), nullable=False),
    Column("period", String(20), nullable=False),
    Column("last_value", BigInteger, nullable=False),
    PrimaryKeyConstraint("series", "period", name="pk_sequences"),
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

idempotency_keys = Table(
    "idempotency_keys",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("principal", String(60), nullable=False),
    Column("key", String(255), nullable=False),
    Column("fingerprint", String(64), nullable=False),
    Column("method", String(10), nullable=False),
    Column("path", Text, nullable=False),
    Column("state", String(12), nullable=False),
    # Who holds the claim right now (a random token per attempt) and since when.
    Column("lock_owner", String(40)),
    Column("locked_at", TS),
    # The process (``holders.id``) that holds the claim: when it stops renewing its
    # heartbeat the claim is takeable at once, without waiting for the lock timeout.
    Column("holder_id", String(40)),
    Column("recovery_point", String(40), nullable=False, server_default="started"),
    Column("purchase_id", String(40)),
    Column("status_code", Integer),
    Column("response_headers", Text),
    Column("response_body", LargeBinary),
    Column("created_at", TS, nullable=False),
    Column("updated_at", TS, nullable=False),
    Column("expires_at", TS, nullable=False),
    CheckConstraint("state IN ('in_progress', 'completed')", name="state_known"),
    UniqueConstraint("principal", "key", name="uq_idempotency_keys_principal_key"),
    Index("ix_idempotency_keys_expires", "expires_at"),
)

# SQL lock leases. Times are epoch milliseconds computed by the database's clock.
lock_leases = Table(
    "lock_leases",
    metadata,
    Column("key", String(255), primary_key=True),
    Column("owner", String(64)),
    Column("fencing_token", BigInteger, nullable=False, server_default="0"),
    Column("acquired_at_ms", BigInteger),
    Column("expires_at_ms", BigInteger),
)

# The highest fencing token a protected resource has accepted; older tokens are refused.
fences = Table(
    "fences",
    metadata,
    Column("resource", String(255), primary_key=True),
    Column("last_token", BigInteger, nullable=False),
    Column("updated_at", TS, nullable=False),
)

# One row per running payguard process: what holds idempotency claims and checkout locks.
# A live process renews ``heartbeat_at`` every second or so; a row whose heartbeat is older
# than ``PAYGUARD_HOLDER_LEASE`` belongs to a dead (or frozen) process.
holders = Table(
    "holders",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("pid", Integer, nullable=False),
    Column("host", String(255), nullable=False),
    Column("started_at", TS, nullable=False),
    Column("heartbeat_at", TS, nullable=False),
)

# Fencing epochs: a counter per lock backend scope that only grows and survives restarts.
# A fencing token is (epoch << 32) | the backend's own counter, so a backend that lost its
# counters (Redis restarted, a local backend in a new process) still hands out larger tokens.
lock_epochs = Table(
    "lock_epochs",
    metadata,
    Column("scope", String(255), primary_key=True),
    Column("epoch", BigInteger, nullable=False),
    Column("updated_at", TS, nullable=False),
)

# Webhook inbox: the primary key is the dedupe guard, inserted in the effects' transaction.
inbox_events = Table(
    "inbox_events",
    metadata,
    Column("provider", String(20), nullable=False),
    Column("event_id", String(255), nullable=False),
    Column("type", String(100), nullable=False),
    Column("object_id", String(255)),
    Column("outcome", String(40), nullable=False),
    Column("received_at", TS, nullable=False),
    # Deliveries of this event id, the first included: the operator's duplicate count.
    Column("deliveries", Integer, nullable=False, server_default="1"),
    Column("last_received_at", TS),
    PrimaryKeyConstraint("provider", "event_id", name="pk_inbox_events"),
    Index("ix_inbox_events_received", "received_at"),
    Index("ix_inbox_events_object", "object_id"),
)

# Outbox: `dedupe_key` makes "one email per purchase" a constraint; delivery state is
# separate columns that retries update without touching the dedupe marker.
outbox_messages = Table(
    "outbox_messages",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("dedupe_key", String(200), nullable=False, unique=True),
    Column("kind", String(40), nullable=False),
    Column("recipient", String(320), nullable=False),
    Column("subject", Text, nullable=False),
    Column("body", Text, nullable=False),
    Column("purchase_id", String(40)),
    Column("user_id", String(40)),
    Column("state", String(10), nullable=False, server_default="pending"),
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("next_attempt_at", TS, nullable=False),
    Column("claimed_until", TS),
    Column("sent_at", TS),
    Column("transport", String(10)),
    Column("last_error", Text),
    Column("created_at", TS, nullable=False),
    CheckConstraint("state IN ('pending', 'sent', 'dead')", name="state_known"),
    Index("ix_outbox_messages_state_next", "state", "next_attempt_at"),
)

