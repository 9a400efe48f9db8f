"""E2E fixtures shared by modules that run many checks against one server per database."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support import services
from tests.support.server import LiveServer


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def module_server(request: pytest.FixtureRequest,
                  tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """One live server per database for the whole module (starting one costs seconds)."""
    root = tmp_path_factory.mktemp(f"server-{request.param}")
    url = (f"sqlite:///{root / 'payguard.db'}" if request.param == "sqlite"
           else services.create_pg_database())
    live = LiveServer(root / "data", url).start()
    try:
        yield live
    finally:
        live.stop()
        if request.param == "postgresql":
            services.drop_pg_database(url)
