"""Who is calling: the admin, or one user."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Principal"]


@dataclass(frozen=True, slots=True)
class Principal:
    kind: str  # "admin" | "user"
    user_id: str | None = None
    email: str | None = None
    name: str | None = None

    @property
    def is_admin(self) -> bool:
        return self.kind == "admin"

    @property
    def scope(self) -> str:
        """The idempotency scope: two principals may use the same key independently."""
        return "admin" if self.is_admin else f"user:{self.user_id}"
