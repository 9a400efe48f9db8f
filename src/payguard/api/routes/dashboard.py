"""The web dashboard: ``/`` and ``/dashboard`` serve the page, ``/static/{name}`` its files.

Only files that exist directly in ``api/static/`` and have a known type are served, looked
up by exact name in a listing of that directory: a requested name is never joined onto a
filesystem path, so ``..``, encoded slashes, backslashes and absolute paths cannot reach
anything else (they are simply not in the listing). Nothing is read at import time.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import FileResponse

__all__ = ["STATIC_DIR", "router"]

STATIC_DIR = Path(__file__).resolve().parent.parent / "static"

_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
}

# The page talks only to its own origin and runs only its own script and styles.
_PAGE_HEADERS = {
    "Cache-Control": "no-cache",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
}

router = APIRouter(tags=["dashboard"], include_in_schema=False)


def _static_file(name: str) -> Path:
    """The file called exactly ``name`` in the static dir, or 404."""
    suffix = Path(name).suffix.lower() if "/" not in name and "\\" not in name else ""
    if suffix not in _TYPES or name.startswith("."):
        raise StarletteHTTPException(404)
    try:
        entries = {p.name: p for p in STATIC_DIR.iterdir() if p.is_file()}
    except OSError:
        raise StarletteHTTPException(404) from None
    path = entries.get(name)
    if path is None:
        raise StarletteHTTPException(404)
    return path


def _serve(name: str) -> FileResponse:
    path = _static_file(name)
    return FileResponse(path, media_type=_TYPES[path.suffix.lower()],
                        headers=dict(_PAGE_HEADERS))


@router.api_route("/", methods=["GET", "HEAD"])
async def index() -> FileResponse:
    return _serve("index.html")


@router.api_route("/dashboard", methods=["GET", "HEAD"])
async def dashboard() -> FileResponse:
    return _serve("index.html")


@router.api_route("/favicon.ico", methods=["GET", "HEAD"])
async def favicon() -> FileResponse:
    # Pages that name no icon (the simulator's) make the browser ask for this one.
    return _serve("favicon.svg")


@router.api_route("/static/{name:path}", methods=["GET", "HEAD"])
async def static(name: str) -> FileResponse:
    return _serve(name)
