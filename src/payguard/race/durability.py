"""After a failover: is every write the service acknowledged on the promoted server, once?

The harness remembers every POST to ``/api/...`` that got a 2xx (``Ack``). Afterwards it
reads the promoted server directly and checks, for each one:

- its ``Idempotency-Key`` row exists exactly once, is ``completed``, and stores the very
  status and bytes the client was given (less a secret shown once, which is never stored;
  effects and stored answer commit together, so
  this is the proof that the acknowledged effects survived and were not applied anew);
- every object the answer names exists exactly once: users, products, programs,
  purchases (``id`` / ``purchase_id``), the receipt number with its purchase, the wallet
  journal entry of an adjustment;
- a Stripe webhook delivery answered 200 has its event in the inbox.

"Applied twice" shows as a second purchase or journal entry that nobody was answered
for; the scenarios' exact end-state checks and the server audit (balances equal journal
sums, no number twice, no gap) catch that.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Table, func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from payguard.config import to_async_url
from payguard.race.types import Invariant
from payguard.store.engine import null_pool_engine
from payguard.store.schema import (
    entries,
    idempotency_keys,
    inbox_events,
    products,
    programs,
    purchases,
    receipts,
    users,
)

__all__ = ["Ack", "AckCheck", "check_acks"]

_ID_TABLES: dict[str, Table] = {"usr": users, "prd": products, "prg": programs,
                                "pur": purchases}
_CHUNK = 500


@dataclass(frozen=True, slots=True)
class Ack:
    """A write the service answered 2xx (the final answer, after the client's retries)."""

    method: str
    path: str
    key: str | None
    status: int
    body: bytes
    request: bytes | None
    at: float  # monotonic time the answer arrived


@dataclass
class AckCheck:
    checked: int = 0
    keys: int = 0
    objects: int = 0
    events: int = 0
    lost: list[str] = field(default_factory=list)
    duplicated: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.lost or self.duplicated or self.changed)

    def invariant(self) -> Invariant:
        evidence = (f"{self.checked} acknowledged writes ({self.keys} idempotency keys, "
                    f"{self.objects} objects, {self.events} webhook events): "
                    f"{len(self.lost)} lost, {len(self.duplicated)} twice, "
                    f"{len(self.changed)} answered differently")
        shown = (self.lost + self.duplicated + self.changed)[:5]
        if shown:
            evidence += "; e.g. " + "; ".join(shown)
        return Invariant("every 2xx write is on the promoted server, exactly once", self.ok,
                         evidence)


def _objects(node: Any) -> Iterator[tuple[str, Any, str | None]]:
    """(kind, value, owning purchase id) for every object an answer names."""
    if isinstance(node, list):
        for item in node:
            yield from _objects(item)
        return
    if not isinstance(node, dict):
        return
    own_id = node.get("id")
    if isinstance(own_id, str) and own_id.split("_", 1)[0] in _ID_TABLES:
        yield own_id.split("_", 1)[0], own_id, None
    purchase_id = node.get("purchase_id")
    if isinstance(purchase_id, str) and purchase_id.startswith("pur_"):
        yield "pur", purchase_id, None
    number = node.get("receipt_number")
    if isinstance(number, str) and isinstance(own_id, str) and own_id.startswith("pur_"):
        yield "receipt", number, own_id
    entry = node.get("entry")
    if isinstance(entry, dict) and isinstance(entry.get("id"), int):
        yield "entry", entry["id"], None
    for key, value in node.items():
        if key != "entry" and isinstance(value, (dict, list)):
            yield from _objects(value)


def _chunks(values: Sequence[Any]) -> Iterator[Sequence[Any]]:
    for i in range(0, len(values), _CHUNK):
        yield values[i:i + _CHUNK]


async def _count(conn: AsyncConnection, column: Any, values: set[Any]) -> dict[Any, int]:
    counts: dict[Any, int] = defaultdict(int)
    for chunk in _chunks(sorted(values, key=str)):
        for value, n in (await conn.execute(
            select(column, func.count()).where(column.in_(chunk)).group_by(column)
        )).all():
            counts[value] = int(n)
    return counts


async def check_acks(database_url: str, acks: Sequence[Ack]) -> AckCheck:
    """Check ``acks`` against the database at ``database_url`` (the promoted server)."""
    result = AckCheck(checked=len(acks))
    keyed = [a for a in acks if a.key is not None]
    wanted: dict[str, set[Any]] = defaultdict(set)
    receipt_owner: dict[str, str] = {}
    event_ids: set[str] = set()
    for ack in acks:
        try:
            body = json.loads(ack.body) if ack.body else None
        except ValueError:
            body = None
        for kind, value, owner in _objects(body):
            wanted[kind].add(value)
            if owner is not None:
                receipt_owner[value] = owner
        if ack.path == "/api/webhooks/stripe" and ack.request:
            try:
                event_id = json.loads(ack.request).get("id")
            except (ValueError, AttributeError):
                event_id = None
            if isinstance(event_id, str):
                event_ids.add(event_id)
    engine = null_pool_engine(to_async_url(database_url))
    try:
        async with engine.connect() as conn:
            await _check_keys(conn, keyed, result)
            await _check_objects(conn, wanted, receipt_owner, result)
            counts = await _count(conn, inbox_events.c.event_id, event_ids)
            result.events = len(event_ids)
            result.lost += [f"webhook event {e} missing from the inbox"
                            for e in sorted(event_ids) if not counts.get(e)]
    finally:
        await engine.dispose()
    return result


async def _check_keys(conn: AsyncConnection, keyed: Sequence[Ack], result: AckCheck) -> None:
    keys = {a.key for a in keyed if a.key is not None}
    result.keys = len(keys)
    rows: dict[str, list[Any]] = defaultdict(list)
    for chunk in _chunks(sorted(keys)):
        for row in (await conn.execute(
            select(idempotency_keys.c.key, idempotency_keys.c.state,
                   idempotency_keys.c.status_code, idempotency_keys.c.response_body)
            .where(idempotency_keys.c.key.in_(chunk))
        )).all():
            rows[row.key].append(row)
    for ack in keyed:
        assert ack.key is not None
        what = f"{ack.method} {ack.path} (key {ack.key}) answered {ack.status}"
        found = rows.get(ack.key, [])
        if not found:
            result.lost.append(f"{what}: no such key")
        elif len(found) > 1:
            result.duplicated.append(f"{what}: {len(found)} keys")
        elif (found[0].state != "completed" or found[0].status_code != ack.status
              or not _same_answer(bytes(found[0].response_body or b""), ack.body)):
            result.changed.append(f"{what}: stored {found[0].state} {found[0].status_code}")


def _same_answer(stored: bytes, answered: bytes) -> bool:
    """The stored answer is the one given, byte for byte, except a secret shown once: the
    first answer carries it with ``<secret>_already_shown: false``, the stored one (what
    replays get) has it null with ``<secret>_already_shown: true``."""
    if stored == answered:
        return True
    try:
        first, kept = json.loads(answered), json.loads(stored)
    except ValueError:
        return False
    if not (isinstance(first, dict) and isinstance(kept, dict)):
        return False
    for flag in [k for k, v in first.items() if k.endswith("_already_shown") and v is False]:
        secret = flag.removesuffix("_already_shown")
        if kept.get(flag) is True and kept.get(secret) is None and secret in first:
            first[secret], first[flag] = None, True
    return bool(first == kept)


async def _check_objects(conn: AsyncConnection, wanted: dict[str, set[Any]],
                         receipt_owner: dict[str, str], result: AckCheck) -> None:
    columns = {kind: table.c.id for kind, table in _ID_TABLES.items()}
    columns["entry"] = entries.c.id
    for kind, column in columns.items():
        values = wanted.get(kind, set())
        result.objects += len(values)
        counts = await _count(conn, column, values)
        for value in sorted(values, key=str):
            if counts.get(value, 0) == 0:
                result.lost.append(f"{column.table.name} {value} missing")
            elif counts[value] > 1:
                result.duplicated.append(f"{column.table.name} {value} x{counts[value]}")
    numbers = wanted.get("receipt", set())
    result.objects += len(numbers)
    found: dict[str, list[str]] = defaultdict(list)
    for chunk in _chunks(sorted(numbers)):
        for number, purchase_id in (await conn.execute(
            select(receipts.c.number, receipts.c.purchase_id)
            .where(receipts.c.number.in_(chunk))
        )).all():
            found[number].append(purchase_id)
    for number in sorted(numbers):
        if not found.get(number):
            result.lost.append(f"receipt {number} missing")
        elif found[number] != [receipt_owner[number]]:
            result.changed.append(f"receipt {number} belongs to {found[number]}, "
                                  f"answered for {receipt_owner[number]}")
