"""Interactive API docs (Swagger UI) from pinned local assets, never a CDN.

The assets come from the ``swagger-ui-py`` package (pinned in pyproject.toml), read from its
installed files by exact name; the page runs only those scripts and our own initializer
(strict CSP, no inline script). Served only when ``PAYGUARD_API_DOCS`` is on, which it is by
default with the simulated provider (development) and off with a real one.
``/api/openapi.json`` is always served: it is the contract.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import FileResponse, HTMLResponse, Response

__all__ = ["router"]

router = APIRouter(include_in_schema=False)

_ASSETS = {
    "swagger-ui-bundle.js": "text/javascript; charset=utf-8",
    "swagger-ui.css": "text/css; charset=utf-8",
}
_INIT_JS = """window.addEventListener("load", function () {
  window.ui = SwaggerUIBundle({url: "/api/openapi.json", dom_id: "#swagger-ui",
    deepLinking: true, presets: [SwaggerUIBundle.presets.apis], layout: "BaseLayout"});
});
"""
_PAGE = """<!doctype html><html><head><meta charset="utf-8"><title>payguard API</title>
<link rel="stylesheet" href="/api/docs/assets/swagger-ui.css"></head><body>
<div id="swagger-ui"></div>
<script src="/api/docs/assets/swagger-ui-bundle.js"></script>
<script src="/api/docs/assets/init.js"></script></body></html>
"""
_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    # Swagger UI sets style attributes, hence 'unsafe-inline' for styles only.
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
        "img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; "
        "frame-ancestors 'none'"
    ),
}


def _assets_dir() -> Path:
    import swagger_ui  # the package is only needed when the docs are on

    return Path(swagger_ui.__file__).resolve().parent / "static"


@router.get("/api/docs")
async def docs_page() -> HTMLResponse:
    return HTMLResponse(_PAGE, headers=_HEADERS)


@router.get("/api/docs/assets/{name}")
async def docs_asset(name: str) -> Response:
    if name == "init.js":
        return Response(_INIT_JS, media_type="text/javascript; charset=utf-8",
                        headers=_HEADERS)
    if name not in _ASSETS:  # exact names only: nothing is joined from the request
        raise StarletteHTTPException(404)
    return FileResponse(_assets_dir() / name, media_type=_ASSETS[name], headers=_HEADERS)
