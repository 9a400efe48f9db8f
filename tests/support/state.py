"""A snapshot of everything a refused request must leave untouched."""

from __future__ import annotations

from typing import Any

from tests.support.api import ApiClient

__all__ = ["snapshot"]


async def snapshot(api: ApiClient, token: str, product_id: str) -> dict[str, Any]:
    """Wallet, stock, purchases, number series and the audit, as one comparable value."""
    user = api.auth(token)
    admin = api.auth(api.admin_token)
    audit = await api.audit()
    assert audit["ok"], audit
    return {
        "balance": await api.balance(token),
        "entries": (await api.http.get("/api/wallet/entries", headers=user)).json(),
        "stock": (await api.http.get(f"/api/products/{product_id}", headers=user)).json(),
        "purchases": (await api.http.get("/api/purchases", headers=user)).json(),
        "sequences": (await api.http.get("/api/admin/sequences", headers=admin)).json(),
        "audit": audit,
    }
