"""Helpers shared by the checkout scenarios: create a session, read a user's pending ones."""

from __future__ import annotations

from typing import Any

from payguard.race.api import Api, User

__all__ = ["pending_purchases", "session_of"]


def session_of(body: Any) -> str | None:
    if isinstance(body, dict) and body.get("session_id"):
        return str(body["session_id"])
    return None


async def pending_purchases(api: Api, user: User) -> list[dict[str, Any]]:
    body = await api.get("/api/purchases?status=pending", user.token)
    if isinstance(body, dict):  # tolerate a paginated wrapper
        body = body.get("purchases") or body.get("items") or []
    return [p for p in body if isinstance(p, dict) and p.get("status") == "pending"]
