"""The dashboard over real HTTP: the page, its static files, and no way out of the static dir.

Static serving does not touch the database, so this runs on SQLite only. The server is the
real app factory under uvicorn on a socket; ``dashboard_app`` adds the dashboard router
only while ``create_app`` does not include it yet.
"""

from __future__ import annotations

import http.client
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from tests.support.server import LiveServer

ROOT = Path(__file__).resolve().parents[2]


def dashboard_app() -> FastAPI:
    """uvicorn factory: the service app with the dashboard router."""
    from payguard.api.app import create_app_from_env
    from payguard.api.routes import dashboard

    app = create_app_from_env()
    if not any(getattr(route, "path", None) == "/" for route in app.routes):
        app.include_router(dashboard.router)
    return app


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    tmp = tmp_path_factory.mktemp("dashboard")
    live = LiveServer(tmp / "data", f"sqlite:///{tmp / 'payguard.db'}")
    live.data_dir.mkdir(parents=True)
    with open(live.log_path, "ab") as log:
        live.proc = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "tests.e2e.test_dashboard:dashboard_app",
             "--factory", "--host", "127.0.0.1", "--port", str(live.port),
             "--log-level", "warning"],
            cwd=ROOT, env=live.environment(), stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 30
        while True:
            if live.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"server did not start:\n{live.log_path.read_text()[-3000:]}")
            try:
                if httpx.get(f"{live.url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        yield live
    finally:
        live.stop()


def raw_get(server: LiveServer, path: str) -> tuple[int, dict[str, str], bytes]:
    """GET with the path sent byte for byte (no client-side dot-segment normalisation)."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    try:
        conn.putrequest("GET", path, skip_accept_encoding=True)
        conn.endheaders()
        res = conn.getresponse()
        return res.status, {k.lower(): v for k, v in res.getheaders()}, res.read()
    finally:
        conn.close()


@pytest.mark.parametrize("path", ["/", "/dashboard"])
def test_page_references_its_script_and_styles(server: LiveServer, path: str) -> None:
    status, headers, body = raw_get(server, path)
    assert status == 200
    assert headers["content-type"].startswith("text/html")
    assert headers["cache-control"] == "no-cache"
    assert "script-src 'self'" in headers["content-security-policy"]
    html = body.decode()
    assert '<script type="module" src="/static/app.js"></script>' in html
    assert '<link rel="stylesheet" href="/static/app.css">' in html


@pytest.mark.parametrize(("name", "content_type", "marker"), [
    ("app.js", "text/javascript", b"/api/session"),
    ("ui.js", "text/javascript", b"Idempotency-Key"),
    ("admin.js", "text/javascript", b"/api/admin/purchases"),
    ("charts.js", "text/javascript", b"parseMetrics"),
    ("user.js", "text/javascript", b"/api/wallet"),
    ("favicon.svg", "image/svg+xml", b"<svg"),
    ("app.css", "text/css", b":root"),
    ("index.html", "text/html", b"<!doctype html>"),
])
def test_static_files_are_served_with_their_type(server: LiveServer, name: str,
                                                 content_type: str, marker: bytes) -> None:
    status, headers, body = raw_get(server, f"/static/{name}")
    assert status == 200
    assert headers["content-type"].split(";")[0] == content_type
    assert headers["cache-control"] == "no-cache"
    assert headers["x-content-type-options"] == "nosniff"
    assert marker in body


def test_favicon_is_served_at_the_root(server: LiveServer) -> None:
    status, headers, body = raw_get(server, "/favicon.ico")
    assert status == 200 and headers["content-type"] == "image/svg+xml"
    assert body.startswith(b"<svg")


@pytest.mark.parametrize("path", [
    "/static/../app.py",
    "/static/%2e%2e/app.py",
    "/static/..%2fapp.py",
    "/static/%2e%2e%2fapp.py",
    "/static/%2E%2E%2Fapp.py",
    "/static/..%252fapp.py",
    "/static/../routes/dashboard.py",
    "/static/..%2froutes%2fdashboard.py",
    "/static/..%5capp.py",
    "/static/..\\app.py",
    "/static/%2fetc%2fpasswd",
    "/static//etc/passwd",
    "/static/../../../../etc/passwd",
    "/static/./app.js/../../app.py",
    "/static/.%2fapp.js",
    "/static/nope.js",
    "/static/app.JS",
    "/static/",
    "/static/app.js%00.css",
])
def test_traversal_and_unknown_files_are_404(server: LiveServer, path: str) -> None:
    status, headers, body = raw_get(server, path)
    assert status == 404, (path, status, body[:200])
    assert headers["content-type"].startswith("application/problem+json")
    assert b"import" not in body and b"root:" not in body


def test_api_is_untouched(server: LiveServer) -> None:
    r = httpx.get(f"{server.url}/api/me", headers={"Authorization": "Bearer nope"}, timeout=10)
    assert r.status_code == 401
    assert r.headers["content-type"].startswith("application/problem+json")
