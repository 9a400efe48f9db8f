"""The shop's own tables. payguard's tables (prefix ``pg_``) live beside them."""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, ForeignKey, Integer, MetaData, String, Table

metadata = MetaData()

users = Table(
    "users", metadata,
    Column("id", String(40), primary_key=True),
    Column("name", String(100), nullable=False),
    Column("api_token", String(64), nullable=False, unique=True),
)

# One row per successful charge; ``number`` comes from payguard's gapless sequence.
invoices = Table(
    "invoices", metadata,
    Column("number", BigInteger, primary_key=True, autoincrement=False),
    Column("user_id", String(40), ForeignKey("users.id"), nullable=False),
    Column("amount", BigInteger, nullable=False),
    Column("transfer_id", String(40), nullable=False, unique=True),
)

events = Table(
    "events", metadata,
    Column("id", String(40), primary_key=True),
    Column("name", String(100), nullable=False),
    Column("seats", Integer, nullable=False),
)

tickets = Table(
    "tickets", metadata,
    Column("id", String(40), primary_key=True),
    Column("event_id", String(40), ForeignKey("events.id"), nullable=False),
    Column("user_id", String(40), ForeignKey("users.id"), nullable=False),
)
