"""Debian's Chromium driven by Playwright, against a real ``payguard serve`` on SQLite.

Playwright's own browser download is not used (and not reachable here): the tests launch
``/usr/bin/chromium`` (``apt-get install -y chromium``; ``.ci/run`` installs it). Without
it the tests skip, unless ``PAYGUARD_REQUIRE_SERVICES=1`` (CI), where they fail.

Every page opened through ``pages`` is watched: console errors, uncaught exceptions and
failed requests are collected in ``ConsoleGuard`` and each test asserts there were none.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support import services
from tests.support.server import LiveServer

CHROMIUM = os.environ.get("PAYGUARD_TEST_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync"]
ROOT = Path(__file__).resolve().parents[2]
SCREENSHOTS = ROOT / "artifacts" / "screenshots"


# Module scope: Playwright's sync API runs its own event loop, closed with the module, so
# the async tests that follow get a clean thread.
@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not (os.path.exists(CHROMIUM) or shutil.which(CHROMIUM)):
        services.unavailable("Chromium", f"{CHROMIUM} not found (apt-get install -y chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as exc:
        services.unavailable("Playwright", str(exc))
    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    tmp = tmp_path_factory.mktemp("browser")
    live = LiveServer(tmp / "data", f"sqlite:///{tmp / 'payguard.db'}",
                      env={"PAYGUARD_RECONCILE_INTERVAL": "0"}).start()
    try:
        yield live
    finally:
        live.stop()


@dataclass
class ConsoleGuard:
    """What went wrong in any watched page: console errors, page errors, failed loads,
    and every request to an admin endpoint made by a page signed in as a user."""

    errors: list[str] = field(default_factory=list)
    requests: dict[str, list[str]] = field(default_factory=dict)

    def watch(self, page: Any, name: str) -> Any:
        self.requests[name] = []
        page.on("console", lambda m: m.type == "error" and self.errors.append(
            f"[{name}] console.error: {m.text} @ {m.location}"))
        page.on("pageerror", lambda e: self.errors.append(f"[{name}] uncaught: {e}"))
        # A fetch cut short by the test navigating away is ERR_ABORTED: not a fault.
        page.on("requestfailed", lambda r: "ERR_ABORTED" not in str(r.failure)
                and self.errors.append(f"[{name}] request failed: {r.method} {r.url} "
                                       f"{r.failure}"))
        page.on("request", lambda r: self.requests[name].append(r.url))
        return page

    def assert_clean(self) -> None:
        assert self.errors == [], "\n".join(self.errors)


@pytest.fixture
def guard() -> ConsoleGuard:
    return ConsoleGuard()


@pytest.fixture
def context(browser: Any) -> Iterator[Any]:
    ctx = browser.new_context(viewport={"width": 1280, "height": 900})
    ctx.set_default_timeout(20_000)
    try:
        yield ctx
    finally:
        ctx.close()


class Seed:
    """Setup through the HTTP API (the browser is for what a person does)."""

    def __init__(self, server: LiveServer) -> None:
        self.server = server
        self.http = httpx.Client(base_url=server.url, timeout=30)
        self.admin = {"Authorization": f"Bearer {server.admin_token}"}

    def post(self, path: str, body: Any, token: str | None = None, *, key: str | None = None,
             expect: int = 201) -> Any:
        headers = {"Authorization": f"Bearer {token}"} if token else dict(self.admin)
        if key:
            headers["Idempotency-Key"] = key
        r = self.http.post(path, json=body, headers=headers)
        assert r.status_code == expect, r.text
        return r.json()

    def get(self, path: str, token: str | None = None) -> Any:
        headers = {"Authorization": f"Bearer {token}"} if token else self.admin
        r = self.http.get(path, headers=headers)
        assert r.status_code == 200, r.text
        return r.json()


@pytest.fixture(scope="module")
def seed(server: LiveServer) -> Iterator[Seed]:
    s = Seed(server)
    try:
        yield s
    finally:
        s.http.close()


def sign_in(page: Any, server: LiveServer, token: str) -> None:
    page.goto(f"{server.url}/")
    page.fill("#token-input", token)
    page.click("#login-form button[type=submit]")
    page.wait_for_selector("#role-badge:not([hidden])")


def screenshot(page: Any, name: str) -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path
