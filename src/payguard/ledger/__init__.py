"""A double-entry wallet ledger whose balances can never go below zero.

Every movement is a transfer between two accounts, written as two immutable entries that
sum to zero, each carrying the account's ``balance_after``. Balances change only through
single conditional statements::

    UPDATE accounts SET balance = balance - :a
     WHERE id = :id AND (allow_negative OR balance >= :a) RETURNING balance

never read-modify-write, and the ``CHECK`` on ``accounts`` backs that up. The same update
only matches an account held in the transfer's currency (``CurrencyMismatch`` otherwise),
and on PostgreSQL a deferred constraint trigger refuses at commit any transfer whose entries
do not sum to zero, as django-hordak does. Platform
accounts (revenue, funding, card clearing) are allowed to go negative: that is how money
entering from outside is booked. Rows are touched in one global order (users' accounts,
then platform accounts, each by id: ``store.lock_order``) so two transfers
over the same pair of accounts can't deadlock on PostgreSQL.

``TransferBatch`` is the batch form: many transfers decided in order against locked
balances, then one net balance change per account and multi-row inserts.
"""

from payguard.ledger.accounts import (
    PLATFORM_KINDS,
    ensure_platform_account,
    ensure_platform_accounts,
    ensure_wallet,
    ensure_wallets,
    lock_balance,
    platform_account_id,
    wallet_account_id,
)
from payguard.ledger.batch import PlannedTransfer, TransferBatch
from payguard.ledger.errors import CurrencyMismatch
from payguard.ledger.transfers import Transfer, transfer

__all__ = [
    "PLATFORM_KINDS",
    "CurrencyMismatch",
    "PlannedTransfer",
    "Transfer",
    "TransferBatch",
    "ensure_platform_account",
    "ensure_platform_accounts",
    "ensure_wallet",
    "ensure_wallets",
    "lock_balance",
    "platform_account_id",
    "transfer",
    "wallet_account_id",
]
