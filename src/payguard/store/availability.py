"""Telling "the database server is gone or cannot take writes" apart from every other error.

These errors are what a failover looks like from the application: the primary died
(connection reset or refused), it is restarting or shutting down (57P0x), it came back
demoted to a read-only standby (25006), or no host of a multi-host URL is writable yet
(asyncpg's ``TargetServerAttributeNotMatched``). The unit of work turns them into
``DatabaseUnavailable`` (503 with ``Retry-After``) and discards the connection, instead of
letting them surface as a 500.
"""

from __future__ import annotations

from collections.abc import Iterator

from sqlalchemy.exc import DBAPIError

__all__ = ["is_unavailable"]

# 08xxx: connection exceptions; 57P01/02/03: admin/crash shutdown, cannot connect now;
# 25006: read-only transaction (a demoted primary, or a standby behind a stale URL).
_UNAVAILABLE_SQLSTATES = frozenset({"25006", "57P01", "57P02", "57P03"})
# Driver errors that mean "no usable connection", matched by name so that this module
# does not need asyncpg (SQLite installs don't have it).
_UNAVAILABLE_NAMES = frozenset({
    "TargetServerAttributeNotMatched",  # no host of the URL is read-write (yet)
    "ConnectionDoesNotExistError",
    "ConnectionFailureError",
    "ClientCannotConnectError",
})


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    while todo:
        current = todo.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        todo.extend([getattr(current, "orig", None), current.__cause__])


def is_unavailable(exc: BaseException) -> bool:
    """True when ``exc`` means the server is unreachable, going away, or read-only.

    Only errors raised by the database layer count: an application error that merely
    happened while handling a socket error (a provider timeout, say) is not the database's.
    """
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return True
    if not (isinstance(exc, (DBAPIError, OSError, TimeoutError))
            or type(exc).__module__.startswith("asyncpg")):
        return False
    for err in _chain(exc):
        if isinstance(err, (OSError, TimeoutError)):
            # ConnectionRefusedError, ConnectionResetError, BrokenPipeError, a connect
            # timeout. (SQLite reports its I/O errors as sqlite3 errors, not OSError.)
            return True
        sqlstate = getattr(err, "sqlstate", None) or getattr(err, "pgcode", None)
        if isinstance(sqlstate, str) and (sqlstate.startswith("08")
                                          or sqlstate in _UNAVAILABLE_SQLSTATES):
            return True
        name = type(err).__name__
        if name in _UNAVAILABLE_NAMES:
            return True
        if name == "InterfaceError" and "connection is closed" in str(err):
            return True
    return False
