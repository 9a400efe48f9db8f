"""The simulator's state: its own SQLite file, shared by every worker process on a machine.

Each operation runs in one ``BEGIN IMMEDIATE`` transaction on a fresh connection in a
worker thread, so writers from several processes serialize on SQLite's lock and the
event loop never blocks on disk. This is deliberately *not* the service's database: the
simulator plays an external system and must not share its fate or its transactions.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from payguard.private_files import make_private_dir

__all__ = ["EventRecord", "NeedsWrite", "SimStore", "Txn"]

T = TypeVar("T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS sessions (
    id TEXT PRIMARY KEY, status TEXT NOT NULL, expires_at INTEGER NOT NULL,
    data TEXT NOT NULL, internal TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS sessions_status_expires ON sessions (status, expires_at);
CREATE TABLE IF NOT EXISTS payment_intents (id TEXT PRIMARY KEY, data TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS charges (id TEXT PRIMARY KEY, data TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS refunds (
    id TEXT PRIMARY KEY, payment_intent TEXT NOT NULL, data TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS events (
    id TEXT PRIMARY KEY, session_id TEXT, type TEXT NOT NULL, created INTEGER NOT NULL,
    data TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS deliveries (
    id INTEGER PRIMARY KEY AUTOINCREMENT, event_id TEXT NOT NULL, event_type TEXT NOT NULL,
    session_id TEXT, url TEXT NOT NULL, state TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0, last_status INTEGER, last_error TEXT,
    updated REAL NOT NULL);
CREATE INDEX IF NOT EXISTS deliveries_session ON deliveries (session_id);
CREATE TABLE IF NOT EXISTS idempotency (
    api_key TEXT NOT NULL, key TEXT NOT NULL, fingerprint TEXT NOT NULL,
    status INTEGER NOT NULL, body TEXT NOT NULL, created REAL NOT NULL,
    PRIMARY KEY (api_key, key));
CREATE INDEX IF NOT EXISTS idempotency_created ON idempotency (created);
"""


@dataclass(frozen=True)
class EventRecord:
    id: str
    type: str
    session_id: str | None
    body: str  # the exact JSON delivered (and signed) on every attempt


class NeedsWrite(Exception):
    """Raised by an operation run read-only that turns out to have something to write."""


@dataclass
class Txn:
    """One open write transaction plus what it produced for after the commit."""

    conn: sqlite3.Connection
    now: int
    base_url: str = ""
    readonly: bool = False
    events: list[EventRecord] = field(default_factory=list)

    def require_write(self) -> None:
        if self.readonly:
            raise NeedsWrite

    def get(self, table: str, ident: str) -> dict[str, Any] | None:
        row = self.conn.execute(f"SELECT data FROM {table} WHERE id = ?", (ident,)).fetchone()
        return json.loads(row[0]) if row else None

    def put(self, table: str, obj: dict[str, Any]) -> None:
        self.conn.execute(
            f"INSERT INTO {table} (id, data) VALUES (?, ?) "
            "ON CONFLICT (id) DO UPDATE SET data = excluded.data",
            (obj["id"], json.dumps(obj)),
        )


class SimStore:
    def __init__(self, path: Path, *, busy_timeout: float = 30.0, extra_schema: str = "") -> None:
        self.path = path
        self._extra_schema = extra_schema  # another simulator's own tables
        self._busy_timeout = busy_timeout
        self._ready = False
        self._init_lock = asyncio.Lock()
        # One writer per process at a time: threads of one process queue here instead of
        # in SQLite's busy handler, whose sleeps (up to 100 ms) would dominate under load.
        # Other processes still serialize on SQLite's own lock.
        self._write_lock = asyncio.Lock()

    def _connect(self) -> sqlite3.Connection:
        # isolation_level=None: we issue BEGIN IMMEDIATE ourselves, so the write lock is
        # taken up front and a read-then-write can never fail half-way with SQLITE_BUSY.
        conn = sqlite3.connect(self.path, timeout=self._busy_timeout, isolation_level=None)
        conn.execute("PRAGMA synchronous=FULL")
        return conn

    def _init_sync(self) -> None:
        make_private_dir(self.path.parent)
        conn = self._connect()
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.executescript(_SCHEMA + self._extra_schema)
        finally:
            conn.close()

    async def ensure_ready(self) -> None:
        if self._ready:
            return
        async with self._init_lock:
            if not self._ready:
                await asyncio.to_thread(self._init_sync)
                self._ready = True

    def _run_sync(self, fn: Callable[[Txn], T], base_url: str,
                  write: bool) -> tuple[T, list[EventRecord]]:
        conn = self._connect()
        try:
            # Reads take a WAL snapshot (no lock); writes take the write lock up front.
            conn.execute("BEGIN IMMEDIATE" if write else "BEGIN")
            txn = Txn(conn=conn, now=int(time.time()), base_url=base_url, readonly=not write)
            try:
                result = fn(txn)
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
            return result, txn.events
        finally:
            conn.close()

    async def run(
        self, fn: Callable[[Txn], T], *, base_url: str = "", write: bool = True
    ) -> tuple[T, list[EventRecord]]:
        """Run ``fn`` in one transaction; returns its result and the events it emitted.

        With ``write=False`` it runs on a read snapshot first and is re-run as a write
        transaction only if it calls ``txn.require_write()``.
        """
        await self.ensure_ready()
        if not write:
            try:
                return await asyncio.to_thread(self._run_sync, fn, base_url, False)
            except NeedsWrite:
                pass
        async with self._write_lock:
            return await asyncio.to_thread(self._run_sync, fn, base_url, True)

    def _read_sync(self, sql: str, args: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        conn = self._connect()
        try:
            return conn.execute(sql, args).fetchall()
        finally:
            conn.close()

    async def read(self, sql: str, *args: Any) -> list[tuple[Any, ...]]:
        await self.ensure_ready()
        return await asyncio.to_thread(self._read_sync, sql, args)
