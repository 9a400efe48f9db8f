"""Hot statements run on the driver connection: compiled once, executed without SQLAlchemy's
per-call work (PostgreSQL), with a constant SQL text whatever the number of rows.

Why: measured on this project's machine, one ``conn.execute`` of a small Core SELECT with an
``IN`` list costs about 450 µs of CPU in SQLAlchemy (cache key, parameter processing,
"expanding" IN rendering, result wrapping); the same statement on the asyncpg connection
underneath costs about 20 µs. The group-commit writer runs about fifteen statements per
batch, so SQLAlchemy's share was most of a batch's CPU. ``bench/wallet.py`` shows the
effect as server CPU milliseconds per purchase.

    ids_query = Query("lock_accounts", lambda d: select(accounts.c.id, accounts.c.balance)
                      .where(in_list(d, accounts.c.id, "ids")).order_by(accounts.c.id))
    rows = await ids_query.fetch(conn, ids=["acc_1", "acc_2"])      # rows as mappings
    await insert_rows(conn, entries, [{...}, {...}], returning=["id"])

On PostgreSQL: lists travel as one array parameter (``= ANY($1::VARCHAR(40)[])``,
``INSERT ... SELECT * FROM unnest(...)``), so a statement has one text for every batch
size and asyncpg prepares it once per connection. The statement runs inside the
transaction that ``Database.transaction`` opened (started here if SQLAlchemy has not sent
its BEGIN yet). Elsewhere (SQLite, in-process, no network) the same Core statement, built
once, runs through SQLAlchemy as usual.

Errors from the driver are asyncpg's own: ``store.uow.is_retryable`` and
``store.availability.is_unavailable`` know them, so conflicts are still replayed and a lost
server still answers 503.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from sqlalchemy import Column, ColumnElement, Table, any_, bindparam, insert
from sqlalchemy.dialects import sqlite
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql import Executable

from payguard.store.tables import Tables

__all__ = ["Query", "driver", "in_list", "insert_rows", "insert_rows_then", "is_postgresql",
           "pg_array_type", "pg_fetch", "pg_sql"]

Row = Mapping[str, Any]


def is_postgresql(conn: AsyncConnection) -> bool:
    return conn.dialect.name == "postgresql"


def in_list(dialect: Dialect, column: ColumnElement[Any], name: str) -> ColumnElement[bool]:
    """``column IN (:name...)``: one array parameter on PostgreSQL (a constant text), an
    expanding parameter elsewhere."""
    if dialect.name == "postgresql":
        return column == any_(bindparam(name, type_=ARRAY(column.type)))
    return column.in_(bindparam(name, expanding=True))


async def driver(conn: AsyncConnection) -> Any:
    """The asyncpg connection under ``conn``, inside the transaction SQLAlchemy opened."""
    fairy = await conn.get_raw_connection()
    adapted: Any = fairy.dbapi_connection
    # SQLAlchemy's asyncpg adapter sends BEGIN lazily, with its first statement; a batch
    # whose first statement goes to the driver must not run outside the transaction.
    # (Private to SQLAlchemy's adapter, pinned with it in pyproject.toml; the group-commit
    # rollback tests fail if this ever stops opening the transaction.)
    if adapted._transaction is None:
        async with adapted._execute_mutex:
            if adapted._transaction is None:
                try:
                    await adapted._start_transaction()
                except Exception as exc:
                    # The adapter wraps asyncpg's error in a class of its own; hand on
                    # asyncpg's, which is_unavailable and is_retryable recognise (a dead
                    # connection found here is a 503 that Database.transaction replays).
                    cause = exc.__cause__
                    if isinstance(cause, Exception):
                        raise cause from None
                    raise
    return adapted._connection


_Compiled = tuple[str, list[str], dict[str, Any], dict[str, Callable[[Any], Any]]]


class Query:
    """A Core statement built once per (dialect, table prefix) by ``build``; on PostgreSQL
    compiled once to driver SQL and run on asyncpg."""

    def __init__(self, name: str, build: Callable[[Dialect, Tables], Executable]) -> None:
        self.name = name
        self._build = build
        self._built: dict[tuple[str, str], Executable] = {}
        self._compiled: dict[tuple[str, str], _Compiled] = {}

    def statement(self, dialect: Dialect, tables: Tables) -> Executable:
        key = (dialect.name, tables.prefix)
        stmt = self._built.get(key)
        if stmt is None:
            stmt = self._built[key] = self._build(dialect, tables)
        return stmt

    def _driver_sql(self, dialect: Dialect, tables: Tables) -> _Compiled:
        key = (dialect.name, tables.prefix)
        found = self._compiled.get(key)
        if found is None:
            stmt: Any = self.statement(dialect, tables)
            compiled: Any = stmt.compile(dialect=dialect)
            processors = {k: v for k, v in (compiled._bind_processors or {}).items()
                          if v is not None}
            found = (str(compiled), list(compiled.positiontup or []), dict(compiled.params),
                     processors)
            self._compiled[key] = found
        return found

    async def fetch(self, conn: AsyncConnection, tables: Tables, **params: Any
                    ) -> Sequence[Row]:
        """Run it on ``tables``; rows as mappings (column name -> value)."""
        if not is_postgresql(conn):
            result = await conn.execute(self.statement(conn.dialect, tables), params)
            return [dict(r._mapping) for r in result] if result.returns_rows else []
        sql, order, defaults, processors = self._driver_sql(conn.dialect, tables)
        values = {**defaults, **params}
        args = []
        for name in order:
            value = values[name]
            processor = processors.get(name)
            args.append(processor(value) if processor is not None else value)
        pg = await driver(conn)
        rows: Sequence[Row] = await pg.fetch(sql, *args)
        return rows


_PG_SQL: dict[tuple[str, str], str] = {}


def pg_sql(template: str, tables: Tables) -> str:
    """``template`` with ``{p}`` replaced by the tables' prefix (validated identifier
    characters), cached: hand-written PostgreSQL statements name prefixed tables too."""
    key = (template, tables.prefix)
    sql = _PG_SQL.get(key)
    if sql is None:
        sql = _PG_SQL[key] = template.replace("{p}", tables.prefix)
    return sql


def pg_array_type(dialect: Dialect, column: Column[Any]) -> str:
    """The PostgreSQL array type of ``column`` (``VARCHAR(40)[]``) for unnest parameters."""
    return f"{column.type.compile(dialect=dialect)}[]"


_INSERT_SQL: dict[tuple[str, tuple[str, ...], tuple[str, ...], str], str] = {}


async def insert_rows(conn: AsyncConnection, table: Table, rows: list[dict[str, Any]], *,
                      returning: Sequence[str] = (), skip_conflicts_on: Sequence[str] = ()
                      ) -> Sequence[Row]:
    """A multi-row INSERT of ``rows`` (all with the same keys); the ``returning`` columns
    of the inserted rows as mappings. ``skip_conflicts_on``: the columns of a unique index;
    a row that would violate it is skipped (``ON CONFLICT (...) DO NOTHING``). On
    PostgreSQL one ``INSERT ... SELECT * FROM unnest(...)`` whatever the number of rows;
    elsewhere SQLAlchemy's executemany."""
    if not rows:
        return []
    columns = tuple(rows[0])
    if not is_postgresql(conn):
        stmt: Any = insert(table)
        if skip_conflicts_on:
            stmt = sqlite.insert(table).on_conflict_do_nothing(
                index_elements=[table.c[c] for c in skip_conflicts_on])
        if returning:
            stmt = stmt.returning(*(table.c[c] for c in returning))
            result = await conn.execute(stmt, rows)
            return [dict(r._mapping) for r in result]
        await conn.execute(stmt, rows)
        return []
    conflict = (f"ON CONFLICT ({', '.join(skip_conflicts_on)}) DO NOTHING"
                if skip_conflicts_on else "")
    key = (table.name, columns, tuple(returning), conflict)
    sql = _INSERT_SQL.get(key)
    if sql is None:
        sql = _INSERT_SQL[key] = _pg_insert(conn.dialect, table, columns, 0, conflict,
                                            returning)
    pg = await driver(conn)
    args = _columns_of(rows, columns)
    if returning:
        found: Sequence[Row] = await pg.fetch(sql, *args)
        return found
    await pg.execute(sql, *args)
    return []


def _columns_of(rows: list[dict[str, Any]], columns: Sequence[str]) -> list[list[Any]]:
    return [[row[c] for row in rows] for c in columns]


def _pg_insert(dialect: Dialect, table: Table, columns: Sequence[str], offset: int,
               conflict: str, returning: Sequence[str]) -> str:
    """``INSERT INTO t (cols) SELECT * FROM unnest($offset+1, ...)``: one array per column."""
    quote = dialect.identifier_preparer.quote
    params = ", ".join(f"${offset + i + 1}::{pg_array_type(dialect, table.c[c])}"
                       for i, c in enumerate(columns))
    sql = (f"INSERT INTO {dialect.identifier_preparer.format_table(table)} "
           f"({', '.join(quote(c) for c in columns)}) SELECT * FROM unnest({params}) {conflict}")
    if returning:
        sql += " RETURNING " + ", ".join(quote(c) for c in returning)
    return sql


_PAIR_SQL: dict[tuple[str, tuple[str, ...], str, tuple[str, ...], tuple[str, ...]], str] = {}


async def insert_rows_then(conn: AsyncConnection, first: Table, first_rows: list[dict[str, Any]],
                           then: Table, then_rows: list[dict[str, Any]], *,
                           returning: Sequence[str] = ()) -> Sequence[Row]:
    """``insert_rows(first)`` then ``insert_rows(then)``; on PostgreSQL ONE statement
    (``WITH f AS (INSERT ...) INSERT ...``: a row of ``then`` may reference one of
    ``first``, the foreign key is checked at the end of the statement). Returns the
    ``returning`` columns of ``then``'s rows."""
    if not is_postgresql(conn) or not first_rows or not then_rows:
        await insert_rows(conn, first, first_rows)
        return await insert_rows(conn, then, then_rows, returning=returning)
    a, b = tuple(first_rows[0]), tuple(then_rows[0])
    key = (first.name, a, then.name, b, tuple(returning))
    sql = _PAIR_SQL.get(key)
    if sql is None:
        sql = _PAIR_SQL[key] = (
            f"WITH first_rows AS ({_pg_insert(conn.dialect, first, a, 0, '', ())}) "
            + _pg_insert(conn.dialect, then, b, len(a), "", returning))
    pg = await driver(conn)
    args = _columns_of(first_rows, a) + _columns_of(then_rows, b)
    if returning:
        found: Sequence[Row] = await pg.fetch(sql, *args)
        return found
    await pg.execute(sql, *args)
    return []


async def pg_fetch(conn: AsyncConnection, sql: str, *args: Any) -> Sequence[Row]:
    """Hand-written PostgreSQL SQL (``$n`` parameters) on the driver, in the transaction."""
    pg = await driver(conn)
    rows: Sequence[Row] = await pg.fetch(sql, *args)
    return rows
