"""Typed values passed between the outbox's claim step, transports and the dispatcher."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TypedDict

__all__ = ["ClaimedMessage", "PassResult"]


@dataclass(frozen=True, slots=True)
class ClaimedMessage:
    """One outbox row, claimed by a dispatcher for delivery attempt number ``attempt``.

    ``(id, attempt)`` is the claim's fencing token: every claim increments ``attempts``,
    so a dispatcher whose lease was taken over can no longer update the row.
    """

    id: int
    dedupe_key: str
    kind: str
    recipient: str
    subject: str
    body: str
    created_at: datetime
    attempt: int
    claimed_until: datetime


class PassResult(TypedDict):
    """What one ``OutboxDispatcher.run_once`` pass did."""

    sent: int
    failed: int
    dead: int
