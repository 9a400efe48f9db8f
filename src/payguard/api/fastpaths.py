"""An unknown path answered without walking the router.

FastAPI matches a request by trying every route in turn (with per-route scope
bookkeeping), so a path that matches nothing pays for all of them, the simulator's and the
dashboard's included, before its 404. ``UnknownPathGuard`` compiles every route's path
pattern into one regular expression on the first request; a path that matches none (nor
its trailing-slash twin, which the router would redirect) gets the router's own 404
problem+json, byte for byte, straight away. Everything else passes through untouched. If
a route's pattern cannot be read, the guard stays out of the way (fails open).
"""

from __future__ import annotations

import re
from typing import Any

from starlette.types import ASGIApp, Receive, Scope, Send

from payguard.api.problems import render_problem, to_response

__all__ = ["UnknownPathGuard"]

_NAMED_GROUP = re.compile(r"\(\?P<[^>]+>")


def _patterns(routes: list[Any]) -> list[str] | None:
    found: list[str] = []
    for route in routes:
        regex = getattr(route, "path_regex", None)
        if regex is not None:
            # A Mount's pattern ends where its sub-paths begin: it matches them all.
            found.append(regex.pattern)
            continue
        nested = getattr(getattr(route, "original_router", None), "routes", None)
        if nested is None:
            return None
        inner = _patterns(list(nested))
        if inner is None:
            return None
        found += inner
    return found


class UnknownPathGuard:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._known: re.Pattern[str] | None = None
        self._ready = False
        self._not_found = render_problem(404, "NOT_FOUND", "Not found", "no such endpoint")

    def _compile(self, scope: Scope) -> None:
        self._ready = True
        router = getattr(scope.get("app"), "router", None)
        patterns = _patterns(list(getattr(router, "routes", None) or [])) if router else None
        if patterns:
            joined = "|".join(f"(?:{_NAMED_GROUP.sub('(?:', p)})" for p in patterns)
            self._known = re.compile(joined)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            if not self._ready:
                self._compile(scope)
            known = self._known
            if known is not None:
                path: str = scope["path"]
                twin = path[:-1] if path.endswith("/") else path + "/"
                if known.match(path) is None and known.match(twin) is None:
                    await to_response(self._not_found)(scope, receive, send)
                    return
        await self.app(scope, receive, send)
