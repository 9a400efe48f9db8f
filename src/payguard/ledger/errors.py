"""Errors of the ledger (the shared ones live in ``payguard.errors``)."""

from __future__ import annotations

from payguard.errors import PayguardError

__all__ = ["CurrencyMismatch"]


class CurrencyMismatch(PayguardError):
    """A transfer named an account held in another currency than the transfer's: a bug in
    the caller, refused by the balance update itself so no money moves."""

    code, title = "CURRENCY_MISMATCH", "Currency mismatch"
