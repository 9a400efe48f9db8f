"""The primitives' tables as one bundle, built for a table-name prefix.

Every primitive (ledger, sequences, capacity counters, idempotency keys, locks, fences,
holders, inbox, outbox) reads and writes through a ``Tables`` bundle, so the same code runs
against payguard's own schema (no prefix: the reference service) or against the tables an
application created beside its own, e.g. ``pg_accounts``, ``pg_idempotency_keys``.

``build_tables(metadata, prefix)`` defines the thirteen tables into ``metadata``: the
reference service calls it once for its own schema (``payguard.store.schema``), with the
wallet owner's foreign key to its ``users`` table; ``payguard.tables(prefix)`` builds a
bundle of its own ``MetaData`` (the primitives only, no foreign key out of them) for an
application, once per prefix. Every name the database sees (tables, constraints, indexes,
the PostgreSQL trigger and its function) carries the prefix, so two bundles with different
prefixes can live in one database, and with no prefix the DDL is exactly the service's.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, fields
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
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.types import TypeDecorator

from payguard.store.uow import Database

__all__ = [
    "NAMING_CONVENTION",
    "TS",
    "BigId",
    "Tables",
    "UtcDateTime",
    "build_tables",
    "create_tables",
    "drop_tables",
    "entries_sum_to_zero_ddl",
    "new_metadata",
    "tables",
    "valid_prefix",
]

#: Constraint and index names derived from the table's name, so they carry its prefix.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# Autoincrement integer keys: BigInteger on PostgreSQL, INTEGER (rowid) on SQLite.
BigId = BigInteger().with_variant(Integer(), "sqlite")

# PostgreSQL limits identifiers to 63 bytes; the longest name derived here is 40 characters
# without a prefix, so 20 leaves room.
_PREFIX = re.compile(r"[a-z][a-z0-9_]{0,19}")


def valid_prefix(prefix: str) -> str:
    """``prefix`` itself when it is empty or a lower-case SQL identifier of 1..20
    characters (letters, digits, ``_``; a letter first), else ``ValueError``.

    ``pg_`` is refused: PostgreSQL searches its catalog before the app's schema, and
    ``pg_catalog.pg_sequences`` would shadow the sequences table.
    """
    if prefix and not _PREFIX.fullmatch(prefix):
        raise ValueError(
            f"table prefix {prefix!r} must be empty or 1 to 20 lower-case letters, digits "
            "or underscores, starting with a letter")
    if prefix.startswith("pg_"):
        raise ValueError(f"table prefix {prefix!r}: names starting with pg_ belong to "
                         "PostgreSQL's catalog")
    return prefix


def new_metadata() -> MetaData:
    return MetaData(naming_convention=NAMING_CONVENTION)


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


def entries_sum_to_zero_ddl(prefix: str = "") -> tuple[str, str]:
    """PostgreSQL: each transfer's entries must sum to zero, checked at commit (a constraint
    trigger, DEFERRABLE INITIALLY DEFERRED, as django-hordak does), so a hand-written or
    buggy journal insert cannot commit. SQLite has no deferred triggers; an audit that
    compares balances with their journal checks it there."""
    p = valid_prefix(prefix)
    return (
        f"""CREATE FUNCTION {p}payguard_transfer_balanced() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    total numeric;
BEGIN
    SELECT COALESCE(SUM(amount), 0) INTO total FROM {p}entries WHERE transfer_id = NEW.transfer_id;
    IF total <> 0 THEN
        RAISE EXCEPTION 'the entries of transfer % sum to %, not 0', NEW.transfer_id, total
            USING ERRCODE = 'check_violation';
    END IF;
    RETURN NULL;
END
$$""",
        f"""CREATE CONSTRAINT TRIGGER {p}entries_sum_to_zero AFTER INSERT OR UPDATE ON {p}entries
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION {p}payguard_transfer_balanced()""",
    )


@dataclass(frozen=True, eq=False)
class Tables:
    """The primitives' tables under one prefix, and the ``MetaData`` that holds them.

    Get one with ``payguard.tables(prefix)`` (cached per prefix) and hand it to the public
    objects (``IdempotencyGuard(..., tables=t)``, ``Ledger(t)``, ...). Include ``metadata``
    in your Alembic ``target_metadata``, or create the tables with
    ``payguard.create_tables``.
    """

    prefix: str
    metadata: MetaData
    accounts: Table
    transfers: Table
    entries: Table
    capacities: Table
    reservations: Table
    sequences: Table
    idempotency_keys: Table
    lock_leases: Table
    fences: Table
    lock_epochs: Table
    holders: Table
    inbox_events: Table
    outbox_messages: Table

    def all(self) -> list[Table]:
        """Every table of the bundle, in creation order (referenced tables first)."""
        return [getattr(self, f.name) for f in fields(self)
                if f.name not in ("prefix", "metadata")]


def build_tables(metadata: MetaData, prefix: str = "", *,
                 owner_fk: str | None = None) -> Tables:
    """Define the primitives' tables, named ``prefix + name``, into ``metadata``.

    ``owner_fk`` (e.g. ``"users.id"``): the column a wallet account's ``owner_id`` refers
    to; None for an application, whose owners live in tables payguard does not know.
    """
    p = valid_prefix(prefix)
    owner_args = (ForeignKey(owner_fk),) if owner_fk else ()

    # A ledger account. Wallets belong to an owner; platform accounts (revenue, funding,
    # card clearing) have none and may go negative, which is how double entry books money
    # coming in from outside.
    accounts = Table(
        f"{p}accounts",
        metadata,
        Column("id", String(40), primary_key=True),
        Column("owner_id", String(40), *owner_args),
        Column("kind", String(20), nullable=False),
        Column("currency", String(3), nullable=False),
        Column("balance", BigInteger, nullable=False, server_default="0"),
        Column("allow_negative", Boolean, nullable=False, server_default=text("false")),
        Column("created_at", TS, nullable=False),
        CheckConstraint("allow_negative OR balance >= 0", name="balance_not_negative"),
        UniqueConstraint("owner_id", "kind", "currency",
                         name=f"uq_{p}accounts_owner_kind_currency"),
    )

    # One money movement: `amount` leaves `debit_account_id` and reaches `credit_account_id`.
    transfers = Table(
        f"{p}transfers",
        metadata,
        Column("id", String(40), primary_key=True),
        Column("kind", String(30), nullable=False),
        Column("amount", BigInteger, nullable=False),
        Column("currency", String(3), nullable=False),
        Column("debit_account_id", String(40), ForeignKey(f"{p}accounts.id"), nullable=False),
        Column("credit_account_id", String(40), ForeignKey(f"{p}accounts.id"), nullable=False),
        Column("purchase_id", String(40)),
        Column("reason", Text),
        Column("created_at", TS, nullable=False),
        CheckConstraint("amount > 0", name="amount_positive"),
        CheckConstraint("debit_account_id <> credit_account_id", name="two_accounts"),
    )

    # The immutable journal: two entries per transfer, summing to zero.
    entries = Table(
        f"{p}entries",
        metadata,
        Column("id", BigId, primary_key=True, autoincrement=True),
        Column("transfer_id", String(40), ForeignKey(f"{p}transfers.id"), nullable=False),
        Column("account_id", String(40), ForeignKey(f"{p}accounts.id"), nullable=False),
        Column("amount", BigInteger, nullable=False),
        Column("balance_after", BigInteger, nullable=False),
        Column("created_at", TS, nullable=False),
        CheckConstraint("amount <> 0", name="amount_nonzero"),
        Index(f"ix_{p}entries_account_id_id", "account_id", "id"),
        Index(f"ix_{p}entries_transfer_id", "transfer_id"),
    )
    for statement in entries_sum_to_zero_ddl(p):
        # DDL() formats its text with ``%``: the RAISE's placeholders must be escaped.
        ddl = DDL(statement.replace("%", "%%"))  # type: ignore[no-untyped-call]
        event.listen(entries, "after_create", ddl.execute_if(dialect="postgresql"))

    # A capacity counter (seats, stock): `taken` moves only through conditional single
    # statements, and the CHECK makes overbooking impossible.
    capacities = Table(
        f"{p}capacities",
        metadata,
        Column("key", String(100), primary_key=True),
        Column("limit", Integer, nullable=False),
        Column("taken", Integer, nullable=False, server_default="0"),
        CheckConstraint("taken >= 0", name="taken_not_negative"),
        CheckConstraint('taken <= "limit"', name="taken_within_limit"),
    )

    # A hold on a capacity for a purchase; `state` moves held -> kept | released exactly once.
    reservations = Table(
        f"{p}reservations",
        metadata,
        Column("id", BigId, primary_key=True, autoincrement=True),
        Column("capacity_key", String(100), ForeignKey(f"{p}capacities.key"), nullable=False),
        Column("purchase_id", String(40), nullable=False),
        Column("quantity", Integer, nullable=False),
        Column("state", String(10), nullable=False, server_default="held"),
        Column("expires_at", TS),
        Column("created_at", TS, nullable=False),
        Column("updated_at", TS, nullable=False),
        CheckConstraint("quantity > 0", name="quantity_positive"),
        CheckConstraint("state IN ('held', 'kept', 'released')", name="state_known"),
        UniqueConstraint("capacity_key", "purchase_id",
                         name=f"uq_{p}reservations_capacity_purchase"),
        Index(f"ix_{p}reservations_state_expires", "state", "expires_at"),
    )

    # Named gapless counters; the row is locked by the increment until the transaction
    # ends, so a rollback gives the number back.
    sequences = Table(
        f"{p}sequences",
        metadata,
        Column("series", String(40), nullable=False),
        Column("period", String(20), nullable=False),
        Column("last_value", BigInteger, nullable=False),
        PrimaryKeyConstraint("series", "period", name=f"pk_{p}sequences"),
    )

    idempotency_keys = Table(
        f"{p}idempotency_keys",
        metadata,
        Column("id", BigId, primary_key=True, autoincrement=True),
        Column("principal", String(60), nullable=False),
        Column("key", String(255), nullable=False),
        Column("fingerprint", String(64), nullable=False),
        Column("method", String(10), nullable=False),
        Column("path", Text, nullable=False),
        # The kind of request that claimed the key (e.g. "checkout"; NULL: one the reconciler
        # only rolls back), so the reconciler never matches request paths.
        Column("operation", String(30)),
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
        UniqueConstraint("principal", "key", name=f"uq_{p}idempotency_keys_principal_key"),
        Index(f"ix_{p}idempotency_keys_expires", "expires_at"),
    )

    # SQL lock leases. Times are epoch milliseconds computed by the database's clock.
    lock_leases = Table(
        f"{p}lock_leases",
        metadata,
        Column("key", String(255), primary_key=True),
        Column("owner", String(64)),
        Column("fencing_token", BigInteger, nullable=False, server_default="0"),
        Column("acquired_at_ms", BigInteger),
        Column("expires_at_ms", BigInteger),
    )

    # The highest fencing token a protected resource has accepted; older tokens are refused.
    fences = Table(
        f"{p}fences",
        metadata,
        Column("resource", String(255), primary_key=True),
        Column("last_token", BigInteger, nullable=False),
        Column("updated_at", TS, nullable=False),
    )

    # Fencing epochs: a counter per lock backend scope that only grows and survives
    # restarts. A fencing token is (epoch << 32) | the backend's own counter, so a backend
    # that lost its counters (Redis restarted, a local backend in a new process) still
    # hands out larger tokens.
    lock_epochs = Table(
        f"{p}lock_epochs",
        metadata,
        Column("scope", String(255), primary_key=True),
        Column("epoch", BigInteger, nullable=False),
        Column("updated_at", TS, nullable=False),
    )

    # One row per running process that holds idempotency claims and locks. A live process
    # renews ``heartbeat_at`` every second or so; a row whose heartbeat is older than the
    # holder lease belongs to a dead (or frozen) process.
    holders = Table(
        f"{p}holders",
        metadata,
        Column("id", String(40), primary_key=True),
        Column("pid", Integer, nullable=False),
        Column("host", String(255), nullable=False),
        Column("started_at", TS, nullable=False),
        Column("heartbeat_at", TS, nullable=False),
    )

    # Webhook inbox: the primary key is the dedupe guard. A row is inserted in the effects'
    # transaction (state applied), or committed pending on receipt and flipped to applied
    # in the effects' transaction by an applier (inbox.enqueue_event / mark_applied).
    inbox_events = Table(
        f"{p}inbox_events",
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
        Column("state", String(10), nullable=False, server_default="applied"),
        Column("payload", Text),  # the verified body, for the applier (pending rows)
        Column("attempts", Integer, nullable=False, server_default="0"),  # failed applies
        Column("next_attempt_at", TS),  # a failed apply's retry time
        Column("locked_until", TS),  # lease of the process applying it now
        Column("last_error", Text),
        PrimaryKeyConstraint("provider", "event_id", name=f"pk_{p}inbox_events"),
        Index(f"ix_{p}inbox_events_received", "received_at"),
        Index(f"ix_{p}inbox_events_object", "object_id"),
        Index(f"ix_{p}inbox_events_due", "state", "next_attempt_at"),
    )

    # Outbox: `dedupe_key` makes "one email per purchase" a constraint; delivery state is
    # separate columns that retries update without touching the dedupe marker.
    outbox_messages = Table(
        f"{p}outbox_messages",
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
        Index(f"ix_{p}outbox_messages_state_next", "state", "next_attempt_at"),
    )

    return Tables(
        prefix=p, metadata=metadata, accounts=accounts, transfers=transfers, entries=entries,
        capacities=capacities, reservations=reservations, sequences=sequences,
        idempotency_keys=idempotency_keys, lock_leases=lock_leases, fences=fences,
        lock_epochs=lock_epochs, holders=holders, inbox_events=inbox_events,
        outbox_messages=outbox_messages,
    )


_BUNDLES: dict[str, Tables] = {}


def tables(prefix: str = "") -> Tables:
    """The primitives' tables for an application, named ``prefix + name``.

    Built once per prefix into a ``MetaData`` of their own that holds nothing else (no
    foreign key out of it): add ``tables(prefix).metadata`` to your Alembic
    ``target_metadata``, or create them with ``create_tables``. Cached: every call with
    the same prefix returns the same bundle.
    """
    bundle = _BUNDLES.get(prefix)
    if bundle is None:
        bundle = _BUNDLES.setdefault(prefix, build_tables(new_metadata(), valid_prefix(prefix)))
    return bundle


async def create_tables(engine: AsyncEngine | Database, *, prefix: str = "",
                        bundle: Tables | None = None) -> Tables:
    """Create the primitives' tables (those missing; existing ones are left alone) in one
    transaction, without Alembic; returns the bundle to hand to the primitives.

    ``bundle`` (default ``tables(prefix)``) picks the tables; on PostgreSQL the deferred
    trigger that refuses unbalanced journal entries is created with ``entries``.
    """
    bundle = bundle or tables(prefix)
    engine = engine.engine if isinstance(engine, Database) else engine
    async with engine.begin() as conn:
        await conn.run_sync(bundle.metadata.create_all, tables=bundle.all())
    return bundle


async def drop_tables(engine: AsyncEngine | Database, *, prefix: str = "",
                      bundle: Tables | None = None) -> None:
    """Drop the primitives' tables of ``prefix`` (and, on PostgreSQL, the trigger's
    function). For tests and tear-downs; there is no undo."""
    bundle = bundle or tables(prefix)
    engine = engine.engine if isinstance(engine, Database) else engine
    async with engine.begin() as conn:
        await conn.run_sync(bundle.metadata.drop_all, tables=bundle.all())
        if conn.dialect.name == "postgresql":
            await conn.exec_driver_sql(
                f"DROP FUNCTION IF EXISTS {bundle.prefix}payguard_transfer_balanced()")
