"""The pure parts of failover: URL forms, which errors mean "no writable server", what an
acknowledged answer names."""

from __future__ import annotations

import json

import pytest
from sqlalchemy.dialects.postgresql.asyncpg import dialect as asyncpg_dialect
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError

from payguard.api.problems import http_status
from payguard.config import to_async_url
from payguard.errors import CommitOutcomeUnknown, DatabaseUnavailable
from payguard.race.durability import _objects, _same_answer
from payguard.store.availability import is_unavailable


def test_libpq_multi_host_url_becomes_sqlalchemy_query_form() -> None:
    url = to_async_url("postgresql://app:pw@10.0.0.1:5432,10.0.0.2/payguard"
                       "?target_session_attrs=read-write")
    assert url == ("postgresql+asyncpg://app:pw@/payguard?host=10.0.0.1:5432"
                   "&host=10.0.0.2:5432&target_session_attrs=read-write")
    dialect = asyncpg_dialect()  # type: ignore[no-untyped-call]
    _, kwargs = dialect.create_connect_args(make_url(url))  # type: ignore[no-untyped-call]
    assert kwargs["host"] == ["10.0.0.1", "10.0.0.2"]
    assert kwargs["port"] == [5432, 5432]
    assert kwargs["target_session_attrs"] == "read-write"


@pytest.mark.parametrize("url", [
    "postgresql://postgres@127.0.0.1:5432/payguard",
    "postgresql+asyncpg://u@/db?host=a:1&host=b:2",
    "sqlite:////tmp/x.db",
])
def test_single_host_and_ready_urls_are_unchanged_apart_from_the_driver(url: str) -> None:
    assert "," not in to_async_url(url)
    assert to_async_url(url).split("://", 1)[1] == url.split("://", 1)[1]


class _PgError(Exception):
    def __init__(self, sqlstate: str) -> None:
        super().__init__(sqlstate)
        self.sqlstate = sqlstate


class TargetServerAttributeNotMatched(Exception):
    """Stands in for asyncpg's class of that name (matched by name)."""


def _wrapped(orig: Exception, cls: type[DBAPIError] = OperationalError) -> DBAPIError:
    return cls("SELECT 1", {}, orig)


@pytest.mark.parametrize("error", [
    ConnectionRefusedError(111, "refused"),
    ConnectionResetError(104, "reset"),
    TimeoutError(),
    _wrapped(_PgError("25006")),  # read-only: a demoted primary
    _wrapped(_PgError("57P01")),  # admin shutdown
    _wrapped(_PgError("57P03")),  # cannot connect now (starting up)
    _wrapped(_PgError("08006")),  # connection failure
    _wrapped(TargetServerAttributeNotMatched("no read-write host")),
])
def test_these_mean_no_writable_server(error: BaseException) -> None:
    assert is_unavailable(error)


@pytest.mark.parametrize("error", [
    _wrapped(_PgError("23505"), IntegrityError),  # unique violation: a real answer
    _wrapped(_PgError("40001")),  # serialization failure: retried, not unavailable
    _wrapped(Exception("database is locked")),
    DatabaseUnavailable(),  # already translated
    ValueError("bad input"),
])
def test_these_do_not(error: BaseException) -> None:
    assert not is_unavailable(error)


def test_an_application_error_raised_while_handling_a_socket_error_is_not_the_databases(
) -> None:
    try:
        try:
            raise ConnectionResetError(104, "provider hung up")
        except ConnectionResetError:
            raise RuntimeError("provider call failed")  # noqa: B904 (context, not cause)
    except RuntimeError as exc:
        assert not is_unavailable(exc)


def test_unknown_commit_outcome_is_a_503_that_must_not_be_replayed() -> None:
    assert http_status(DatabaseUnavailable()) == http_status(CommitOutcomeUnknown()) == 503
    assert DatabaseUnavailable.retry_after and CommitOutcomeUnknown.retry_after
    assert DatabaseUnavailable().nothing_committed is True
    assert CommitOutcomeUnknown().nothing_committed is False
    assert CommitOutcomeUnknown().code == "COMMIT_OUTCOME_UNKNOWN"


def test_an_answer_names_its_objects() -> None:
    purchase = {"id": "pur_1", "receipt_number": "SC2026000007", "items": ["k1"],
                "pricing": {"final_price": 5}}
    assert sorted(_objects(purchase), key=str) == sorted(
        [("pur", "pur_1", None), ("receipt", "SC2026000007", "pur_1")], key=str)
    adjustment = {"balance": 500, "entry": {"id": 42, "purchase_id": None}}
    assert list(_objects(adjustment)) == [("entry", 42, None)]
    session = json.loads('{"session_id": "cs_1", "purchase_id": "pur_2", "existing": false}')
    assert list(_objects(session)) == [("pur", "pur_2", None)]
    assert list(_objects([{"id": "usr_9", "token": "t"}, {"id": "cs_x"}])) == [
        ("usr", "usr_9", None)]


def test_a_stored_answer_may_differ_only_by_the_secret_shown_once() -> None:
    first = b'{"id":"usr_1","token":"pgu_secret","token_already_shown":false}'
    kept = b'{"id":"usr_1","token":null,"token_already_shown":true}'
    assert _same_answer(first, first)
    assert _same_answer(kept, first)
    assert not _same_answer(b'{"id":"usr_2","token":null,"token_already_shown":true}', first)
    assert not _same_answer(b'{"id":"usr_1","token":"other","token_already_shown":true}',
                            first)
    assert not _same_answer(b'{"balance":5}', b'{"balance":6}')
