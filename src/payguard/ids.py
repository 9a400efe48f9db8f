"""Opaque, prefixed, random identifiers (``pur_3kTm...``): unguessable, so ids can't be probed."""

from __future__ import annotations

import secrets

__all__ = ["new_id"]


def new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_urlsafe(15)}"
