"""The public API: every exported name resolves, is documented, and ``import payguard`` pulls
in neither a web framework nor the reference service."""

from __future__ import annotations

import inspect
import subprocess
import sys

import payguard
from payguard.store import schema
from payguard.store.tables import build_tables, new_metadata


def test_every_exported_name_resolves_and_has_a_docstring() -> None:
    assert set(payguard.__all__) == {"__version__", *payguard._EXPORTS}
    undocumented = []
    for name in payguard.__all__:
        value = getattr(payguard, name)
        if name != "__version__" and not inspect.getdoc(value):
            undocumented.append(name)
    assert undocumented == []


def test_public_classes_document_their_public_methods() -> None:
    for name in ("Ledger", "Sequences", "Counters", "Inbox", "Outbox", "IdempotencyGuard",
                 "LockService", "Lease"):
        cls = getattr(payguard, name)
        for attr, member in vars(cls).items():
            if not attr.startswith("_") and inspect.isfunction(member):
                assert inspect.getdoc(member), f"{name}.{attr} has no docstring"


def test_import_payguard_is_cheap_and_framework_free() -> None:
    code = ("import sys, payguard; payguard.IdempotencyGuard; payguard.Ledger; "
            "payguard.lock_service; payguard.create_tables; "
            "bad = sorted(m for m in sys.modules if m.split('.')[0] in "
            "('fastapi', 'starlette', 'uvicorn', 'stripe') or m.startswith("
            "('payguard.api', 'payguard.service', 'payguard.cli', 'payguard.race'))); "
            "print(bad)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "[]"


def test_the_service_uses_the_same_objects_the_library_exports() -> None:
    from payguard import idempotency, locks, outbox
    from payguard.store import uow

    assert payguard.IdempotencyGuard is idempotency.IdempotencyGuard
    assert payguard.LockService is locks.LockService
    assert payguard.OutboxDispatcher is outbox.OutboxDispatcher
    assert payguard.Database is uow.Database
    # The service's schema is the primitives' bundle without a prefix.
    assert schema.accounts is schema.PRIMITIVES.accounts
    assert schema.PRIMITIVES.prefix == ""


def test_unprefixed_bundle_matches_the_service_schema_column_for_column() -> None:
    app = build_tables(new_metadata())
    for ours, theirs in zip(app.all(), schema.PRIMITIVES.all(), strict=True):
        assert ours.name == theirs.name
        assert [c.name for c in ours.columns] == [c.name for c in theirs.columns]
        # Only the service's accounts refer to its users table.
        service_only = {"fk_accounts_owner_id_users"}
        assert ({c.name for c in ours.constraints}
                == {c.name for c in theirs.constraints} - service_only)
        assert {i.name for i in ours.indexes} == {i.name for i in theirs.indexes}
    assert not app.accounts.c.owner_id.foreign_keys
    assert schema.accounts.c.owner_id.foreign_keys


def test_prefixed_names_carry_the_prefix_everywhere() -> None:
    t = payguard.tables("shop_")
    for table in t.all():
        assert table.name.startswith("shop_")
        for constraint in table.constraints:
            assert "shop_" in str(constraint.name), constraint
        for index in table.indexes:
            assert "shop_" in str(index.name), index
