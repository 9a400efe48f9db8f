"""Schemathesis against the served OpenAPI document, as an admin and as a user, on SQLite and
PostgreSQL: every operation, valid and invalid inputs, and for every response no 5xx, a
declared status, the declared content type, a body that matches the declared schema, and
problem+json for every error. Bounded by example count (``EXAMPLES`` per operation and
mode), so it stays within the suite's time budget."""

from __future__ import annotations

import os
import uuid
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.support.api import ApiClient
from tests.support.server import LiveServer

# Per operation and generation mode; PAYGUARD_FUZZ_EXAMPLES=200 for a deep run on demand.
EXAMPLES = int(os.environ.get("PAYGUARD_FUZZ_EXAMPLES", "2"))


@schemathesis.check
def errors_are_problem_json(ctx: Any, response: Any, case: Any) -> bool | None:
    if response.status_code >= 400:
        ctype = response.headers.get("content-type", [""])
        ctype = ctype[0] if isinstance(ctype, list) else ctype
        # /healthz answers 503 with its own JSON status document (API.md); all else: problems.
        if case.operation.path != "/healthz":
            assert ctype == "application/problem+json", (response.status_code, ctype)
    return None


CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
          response_schema_conformance, errors_are_problem_json]


@pytest.fixture
async def tokens(module_server: LiveServer) -> dict[str, str]:
    async with ApiClient(module_server.url, module_server.admin_token) as api:
        user = await api.create_user(balance=100_000)
        await api.create_product(300, 5)
    return {"admin": module_server.admin_token, "user": user["token"]}


@pytest.mark.parametrize("role", ["admin", "user"])
def test_every_operation_keeps_the_contract(module_server: LiveServer,
                                            tokens: dict[str, str], role: str) -> None:
    schema = schemathesis.openapi.from_url(f"{module_server.url}/api/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 26
    headers = {"Authorization": f"Bearer {tokens[role]}"}
    strategy = st.one_of(*(op.as_strategy(generation_mode=mode) for op in operations
                           for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)))

    @settings(max_examples=EXAMPLES * len(operations) * 2, deadline=None, database=None,
              phases=[Phase.generate], suppress_health_check=list(HealthCheck))
    @given(case=strategy)
    def run(case: Any) -> None:
        if case.headers and "Idempotency-Key" in case.headers:
            # Fresh keys, so examples test the operation rather than replays of each other.
            case.headers["Idempotency-Key"] = str(uuid.uuid4())
        case.call_and_validate(headers=headers, checks=CHECKS)

    run()
