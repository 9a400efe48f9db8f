"""Health and metrics."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from starlette.responses import JSONResponse

from payguard.api.deps import Ctx

router = APIRouter(tags=["ops"])


@router.get("/healthz", response_model=None)
async def healthz(ctx: Ctx) -> Any:
    """``database_server`` is the server this instance writes to (``host:port`` on
    PostgreSQL); ``database_writable`` false means a standby or a failover in progress."""
    db = await ctx.db.server_status()
    status: dict[str, Any] = {
        "status": "ok", "database": "ok", "redis": "absent",
        "database_server": db.server, "database_writable": db.writable,
    }
    if not db.reachable:
        status.update(status="degraded", database="down")
    elif not db.writable:
        status.update(status="degraded", database="read-only")
    if ctx.locks.backend == "redis":  # Redis only backs the lock service
        status["redis"] = "ok" if await ctx.locks.healthy() else "down"
        if status["redis"] == "down":
            status["status"] = "degraded"
    code = 200 if status["status"] == "ok" else 503
    return JSONResponse(status, status_code=code)
