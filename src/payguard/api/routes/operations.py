"""Operations: stuck purchases, the reconciler, lock status (admin) and ``/metrics``."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from starlette.responses import Response

from payguard.api.deps import Admin, Ctx, json_response, run_idempotent_phased
from payguard.idempotency import Claim, StoredResponse
from payguard.metrics import CONTENT_TYPE_LATEST, Metrics
from payguard.service.inflight import in_flight
from payguard.service.reconcile import list_stuck, reconcile

__all__ = ["router"]

router = APIRouter(tags=["operations"])

#: Ten years: far past any purchase's life, and far inside what a timedelta can hold.
MAX_AGE_SECONDS = 315_360_000
OlderThan = Annotated[float | None, Query(
    ge=0, le=MAX_AGE_SECONDS, allow_inf_nan=False,
    description="seconds; default PAYGUARD_STUCK_AFTER")]


@router.get("/api/admin/purchases/stuck")
async def stuck_purchases(ctx: Ctx, _admin: Admin,
                          older_than: OlderThan = None) -> list[dict[str, Any]]:
    age = ctx.settings.stuck_after if older_than is None else older_than
    return await list_stuck(ctx, age)


@router.post("/api/admin/reconcile")
async def run_reconcile(request: Request, ctx: Ctx, admin: Admin,
                        older_than: OlderThan = None) -> Response:
    """One reconciler run now; ``skipped: true`` when another instance's run is working."""
    async def handler(_claim: Claim | None) -> StoredResponse:
        return json_response(await reconcile(ctx, older_than=older_than))

    # Idempotency-Key is optional here, as on every POST outside the money-moving ones.
    return await run_idempotent_phased(request, ctx, admin, handler, required=False)


@router.get("/api/admin/in-flight")
async def work_in_flight(ctx: Ctx, _admin: Admin) -> dict[str, Any]:
    """Keys in progress, leases held, checkouts without their session; ``quiet`` when none."""
    return await in_flight(ctx)


@router.get("/api/admin/locks")
async def locks(ctx: Ctx, _admin: Admin) -> dict[str, Any]:
    stats: dict[str, Any] = await ctx.locks.stats()
    # The group-commit writer of the process that answered (each process has its own).
    stats["batches"] = ctx.writer.stats.as_dict()
    return stats


@router.get("/metrics", include_in_schema=False)
async def metrics(request: Request, ctx: Ctx) -> Response:
    # Unauthenticated, as Prometheus scrapes: bind to a private interface or filter it at
    # the proxy (docs/operating.md).
    collector: Metrics = request.app.state.metrics
    return Response(await collector.scrape(ctx), media_type=CONTENT_TYPE_LATEST)
