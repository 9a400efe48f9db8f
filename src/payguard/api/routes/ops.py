"""Health and metrics."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from sqlalchemy import text
from starlette.responses import JSONResponse

from payguard.api.deps import Ctx

router = APIRouter(tags=["ops"])


@router.get("/healthz", response_model=None)
async def healthz(ctx: Ctx) -> Any:
    status: dict[str, str] = {"status": "ok", "database": "ok", "redis": "absent"}
    try:
        async with ctx.db.unit_of_work(readonly=True) as uow:
            await uow.conn.execute(text("SELECT 1"))
    except Exception:
        status.update(status="degraded", database="down")
    redis_check = ctx.extras.get("redis_ping")
    if redis_check is not None:
        status["redis"] = "ok" if await redis_check() else "down"
        if status["redis"] == "down":
            status["status"] = "degraded"
    code = 200 if status["status"] == "ok" else 503
    return JSONResponse(status, status_code=code)
