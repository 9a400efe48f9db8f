"""The harness's HTTP client: a pooled httpx client per instance, retries, outcome recording.

It retries like a well-behaved client of API.md, so that a retry can never apply anything
twice and every request gets a final answer if the service recovers:
- no answer (connection refused/reset, instance killed): the same ``Idempotency-Key``;
- a 5xx (lock timeout, provider down, database dropped; the key was released): same key;
- ``409 REQUEST_IN_PROGRESS`` / ``409 PAYMENT_IN_PROGRESS``: same key (neither is stored:
  the retry runs again once the holder finished or was found dead);
- waiting ``Retry-After`` seconds when the answer carries it, else a jittered back-off;
- for at most ``retry_for`` seconds per request: then the request is recorded with its last
  answer, and counts as unfinished (a liveness failure).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import random
import re
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import httpx

from payguard.race.durability import Ack
from payguard.race.types import Sample, is_transient

__all__ = ["EndpointMissing", "RaceClient", "Recorder", "Reply", "new_key"]

_MAX_BACKOFF = 0.5
_MAX_RETRY_AFTER = 5.0  # never sleep longer than this on one Retry-After


def new_key() -> str:
    return str(uuid.uuid4())


class EndpointMissing(Exception):
    """The server does not offer a route the scenario needs (404/405 on the route itself)."""

    def __init__(self, method: str, path: str, status: int) -> None:
        super().__init__(f"{method} {path} answered {status}: the server does not offer it")
        self.method, self.path, self.status = method, path, status


@dataclass(frozen=True)
class Reply:
    status: int  # 0: no HTTP answer before the retry deadline
    raw: bytes
    headers: httpx.Headers
    latency: float
    attempts: int
    error: str = ""  # transport error of the last attempt when status == 0
    ended_at: float = 0.0  # time.monotonic() of the final answer

    @property
    def body(self) -> Any:
        try:
            return json.loads(self.raw) if self.raw else None
        except ValueError:
            return None

    @property
    def code(self) -> str | None:
        body = self.body
        if self.status >= 400 and isinstance(body, dict):
            code = body.get("code")
            return str(code) if code is not None else None
        return None

    @property
    def replayed(self) -> bool:
        return str(self.headers.get("Idempotent-Replayed", "")).lower() == "true"


class Recorder:
    """Collects a scenario's samples; ``on_sample`` drives the progress bar."""

    def __init__(self, on_sample: Callable[[], None] | None = None) -> None:
        self.samples: list[Sample] = []
        self.on_sample = on_sample

    def add(self, op: str, reply: Reply) -> None:
        self.samples.append(Sample(op, reply.status, reply.code, reply.latency, reply.attempts,
                                   reply.ended_at))
        if self.on_sample is not None:
            self.on_sample()


def _template(path: str) -> str:
    return re.sub(r"\{[^}]*\}", "{}", path)


class RaceClient:
    """Sends requests round-robin over one or more instances of the same service."""

    def __init__(
        self,
        base_urls: Sequence[str],
        admin_token: str,
        *,
        concurrency: int = 50,
        timeout: float = 30.0,
        retry_for: float = 120.0,
        record_acks: bool = False,
    ) -> None:
        if not base_urls:
            raise ValueError("at least one base URL is required")
        self.base_urls = [u.rstrip("/") for u in base_urls]
        self.admin_token = admin_token
        self.retry_for = retry_for
        limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
        self._clients = [
            httpx.AsyncClient(base_url=u, limits=limits, timeout=timeout) for u in self.base_urls
        ]
        self._next = itertools.cycle(range(len(self._clients)))
        self._routes: set[tuple[str, str]] | None = None
        # Bounds in-flight requests across every scenario running at once (``mixed``).
        self._gate = asyncio.Semaphore(concurrency)
        #: Every POST to the API answered 2xx, when ``record_acks`` (the failover check).
        self.acks: list[Ack] | None = [] if record_acks else None

    async def __aenter__(self) -> RaceClient:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        for client in self._clients:
            await client.aclose()

    # -- route discovery ---------------------------------------------------------------

    async def load_routes(self) -> None:
        """Read the server's OpenAPI document, if it publishes one, to know its routes."""
        # FastAPI's default place, and payguard's (next to its docs under /api).
        for where in ("/api/openapi.json", "/openapi.json"):
            try:
                reply = await self._clients[0].get(where)
                paths = reply.json()["paths"] if reply.status_code == 200 else None
            except (httpx.HTTPError, ValueError, KeyError, TypeError):
                paths = None
            if isinstance(paths, dict):
                self._routes = {
                    (method.upper(), _template(path))
                    for path, ops in paths.items()
                    if isinstance(ops, dict)
                    for method in ops
                }
                return

    def missing_routes(self, needed: Sequence[tuple[str, str]]) -> list[str]:
        """Routes of ``needed`` the server does not publish; empty when unknown."""
        if self._routes is None:
            return []
        return [f"{m} {p}" for m, p in needed if (m, _template(p)) not in self._routes]

    # -- requests ----------------------------------------------------------------------

    async def request(
        self,
        method: str,
        path: str,
        *,
        token: str | None = None,
        json_body: Any = None,
        key: str | None = None,
        rec: Recorder | None = None,
        op: str | None = None,
        headers: dict[str, str] | None = None,
        content: bytes | None = None,
        retry: bool = True,
    ) -> Reply:
        """One logical request, retried per the module rules; recorded as ``op`` in ``rec``.

        Raises ``EndpointMissing`` when the route itself is absent.
        """
        hdrs = {"Authorization": f"Bearer {token or self.admin_token}"}
        hdrs.update(headers or {})
        if content is None and json_body is not None:
            content = json.dumps(json_body).encode()
            hdrs.setdefault("Content-Type", "application/json")
        attempts = 0
        async with self._gate:
            # From the first attempt, not from the wait for a slot of the harness's own
            # concurrency limit: a scenario that gathers thousands of requests at once
            # (webhook-storm) would otherwise report its queue as the service's latency.
            start = time.perf_counter()
            deadline = start + self.retry_for
            while True:
                attempts += 1
                if key is not None:
                    hdrs["Idempotency-Key"] = key
                client = self._clients[next(self._next)]
                try:
                    resp = await client.request(method, path, content=content, headers=hdrs)
                except httpx.TransportError as exc:
                    reply = Reply(0, b"", httpx.Headers(), time.perf_counter() - start,
                                  attempts, error=f"{type(exc).__name__}: {exc}",
                                  ended_at=time.monotonic())
                else:
                    reply = Reply(resp.status_code, resp.content, resp.headers,
                                  time.perf_counter() - start, attempts,
                                  ended_at=time.monotonic())
                if not (retry and is_transient(reply.status, reply.code)):
                    break
                pause = _pause(reply, attempts)
                if time.perf_counter() + pause >= deadline:
                    break
                await asyncio.sleep(pause)
        if reply.status in (404, 405) and _route_missing(reply):
            raise EndpointMissing(method, path, reply.status)
        if (self.acks is not None and 200 <= reply.status < 300 and method.upper() == "POST"
                and path.startswith("/api/")):
            self.acks.append(Ack(method.upper(), path, key, reply.status, reply.raw, content,
                                 time.monotonic()))
        if rec is not None and op is not None:
            rec.add(op, reply)
        return reply


def _pause(reply: Reply, attempt: int) -> float:
    """``Retry-After`` when the server sent one (capped), else a jittered back-off."""
    try:
        after = float(reply.headers.get("Retry-After", ""))
    except ValueError:
        after = 0.0
    if after > 0:
        # Jittered too, so that a burst told "1 s" does not come back as one burst.
        return min(_MAX_RETRY_AFTER, after) * random.uniform(0.5, 1.0)
    return _backoff(attempt)


def _backoff(attempt: int) -> float:
    # Jittered so that the retries of a burst do not arrive as a second burst.
    return random.uniform(0.5, 1.0) * min(_MAX_BACKOFF, 0.02 * 2.0 ** min(attempt, 10))


def _route_missing(reply: Reply) -> bool:
    """405, or a 404 that is no error *about something* (a problem ``code``, or Stripe's
    ``error`` object from the simulator): the framework's bare "Not Found" for a route.

    A server that renders route 404s as ``NOT_FOUND`` problems is recognised from its
    OpenAPI document instead (``load_routes``).
    """
    if reply.status == 405:
        return True
    body = reply.body
    return not (isinstance(body, dict) and ("code" in body or "error" in body))
