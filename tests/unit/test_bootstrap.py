"""The composition root builds a fully typed context, and the CLI wiring is not the web's."""

from __future__ import annotations

import ast
import dataclasses
import typing
from pathlib import Path

from payguard.bootstrap import app_context
from payguard.config import Settings
from payguard.idempotency import IdempotencyGuard
from payguard.locks import LockService
from payguard.outbox import OutboxDispatcher
from payguard.providers import StripeProvider
from payguard.service.context import AppContext
from payguard.store.uow import Database
from payguard.telemetry import NO_METRICS, MetricsSink

SRC = Path(__file__).resolve().parents[2] / "src" / "payguard"


def test_app_context_fields_are_concrete_types() -> None:
    hints = typing.get_type_hints(AppContext)
    assert {f.name for f in dataclasses.fields(AppContext)} == set(hints)
    assert typing.Any not in hints.values()
    assert "extras" not in hints


async def test_build_context_wires_every_part(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, database_url=f"sqlite:///{tmp_path / 'p.db'}")
    sink = MetricsSink()
    async with app_context(settings, metrics=sink) as ctx:
        assert isinstance(ctx.db, Database) and isinstance(ctx.guard, IdempotencyGuard)
        assert isinstance(ctx.locks, LockService) and isinstance(ctx.outbox, OutboxDispatcher)
        assert isinstance(ctx.provider, StripeProvider)
        # Every part reports to the one sink it was built with.
        assert ctx.metrics is sink and ctx.guard.metrics is sink
        assert ctx.locks.metrics is sink and ctx.outbox.metrics is sink
        assert ctx.writer.metrics is sink and ctx.writer.db is not ctx.db
        assert await ctx.outbox.backlog() == 0
    assert NO_METRICS is not sink


def test_cli_modules_do_not_import_the_web_layer() -> None:
    for path in (SRC / "cli").glob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module:
                assert not node.module.startswith("payguard.api"), (path.name, node.module)
