"""Token rotation across two live `payguard serve` processes sharing one database.

Each process caches resolved user tokens for PAYGUARD_TOKEN_CACHE_TTL seconds. After
`POST /api/admin/users/{id}/token`, the rotating process refuses the old token at once, and
every process refuses it once the TTL has passed; the new token works on both.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.support.api import ApiClient
from tests.support.server import LiveServer

TTL = 2.0


@pytest.fixture
async def pair(db_url: str, tmp_path: Path) -> AsyncIterator[tuple[ApiClient, ApiClient]]:
    env = {"PAYGUARD_TOKEN_CACHE_TTL": str(TTL), "PAYGUARD_RECONCILE_INTERVAL": "0"}
    servers = [LiveServer(tmp_path / f"node{i}", db_url, env=env) for i in range(2)]
    servers[1].admin_token = servers[0].admin_token
    clients: list[ApiClient] = []
    try:
        for server in servers:
            server.start()
            clients.append(ApiClient(server.url, server.admin_token))
        yield clients[0], clients[1]
    finally:
        for client in clients:
            await client.close()
        for server in servers:
            server.stop()


async def me(api: ApiClient, token: str) -> int:
    return (await api.http.get("/api/me", headers=api.auth(token))).status_code


async def test_rotated_token_is_refused_everywhere_within_the_ttl(
    pair: tuple[ApiClient, ApiClient],
) -> None:
    a, b = pair
    user = await a.create_user()
    old = user["token"]
    await refused_rotations(a, user)
    # Both processes have the old token cached.
    assert [await me(a, old), await me(b, old)] == [200, 200]

    key = str(uuid.uuid4())
    rotated = await a.http.post(f"/api/admin/users/{user['id']}/token",
                                headers=a.auth(a.admin_token, key))
    rotated_at = time.monotonic()
    assert rotated.status_code == 201, rotated.text
    body = rotated.json()
    assert body["id"] == user["id"] and body["token_already_shown"] is False
    new = body["token"]
    assert new != old and new.startswith("pgu_")

    # The rotating process dropped its cached entry: refused at once, new token accepted.
    assert await me(a, old) == 401
    me_new = await a.http.get("/api/me", headers=a.auth(new))
    assert me_new.status_code == 200 and me_new.json()["id"] == user["id"]

    # The other process may serve its cached copy, but not for longer than the TTL.
    await asyncio.sleep(max(0.0, TTL - (time.monotonic() - rotated_at)) + 0.2)
    for api in (a, b):
        refused = await api.http.get("/api/me", headers=api.auth(old))
        assert refused.status_code == 401
        assert refused.headers["content-type"] == "application/problem+json"
        assert refused.json()["code"] == "UNAUTHENTICATED"
        assert await me(api, new) == 200
        wallet = await api.http.get("/api/wallet", headers=api.auth(new))
        assert wallet.status_code == 200 and wallet.json()["balance"] == 0

    # A replay answers from the stored response, which never held the token.
    replay = await b.http.post(f"/api/admin/users/{user['id']}/token",
                               headers=b.auth(b.admin_token, key))
    assert replay.status_code == 201
    assert replay.headers["idempotent-replayed"] == "true"
    assert replay.json() == {"id": user["id"], "token": None, "token_already_shown": True}
    assert await me(b, new) == 200  # the replay rotated nothing


async def refused_rotations(a: ApiClient, user: dict[str, str]) -> None:
    """Without a key, with a user token, for an unknown user: refused, nothing rotated."""
    path = f"/api/admin/users/{user['id']}/token"
    missing = await a.http.post(path, headers=a.auth(a.admin_token))
    assert (missing.status_code, missing.json()["code"]) == (400, "IDEMPOTENCY_KEY_MISSING")
    forbidden = await a.http.post(path, headers=a.auth(user["token"], str(uuid.uuid4())))
    assert (forbidden.status_code, forbidden.json()["code"]) == (403, "FORBIDDEN")
    unknown = await a.http.post("/api/admin/users/usr_nobody/token",
                                headers=a.auth(a.admin_token, str(uuid.uuid4())))
    assert (unknown.status_code, unknown.json()["code"]) == (404, "NOT_FOUND")
