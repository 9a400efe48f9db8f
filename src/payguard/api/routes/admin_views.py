"""The operator's views (admin token): purchases across users, one purchase with all that
touched it, users with balances and journals, the webhook inbox, the outbox (with the
retry of a dead email), programs' seats and products' stock.

Reads run in one read-only unit of work each. Query parameters are bounded and cursors
are matched whole against their pattern; anything else is ``422 VALIDATION_ERROR``.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query, Request
from pydantic import AwareDatetime
from starlette.responses import Response

from payguard.api.admin_models import (
    AdminProduct,
    AdminProgram,
    Email,
    EmailPage,
    PurchaseDetail,
    PurchasePage,
    UserJournal,
    UserPage,
    WebhookPage,
)
from payguard.api.deps import Admin, Ctx, json_response, run_idempotent
from payguard.api.schemas import PurchaseStatusField
from payguard.errors import ValidationFailed
from payguard.idempotency import Claim, StoredResponse
from payguard.service import admin_catalog, admin_outbox, admin_purchases, admin_users
from payguard.service.inbox_view import InboxState, list_events
from payguard.service.paging import (
    CURSOR_PATTERN,
    SERIAL_CURSOR_PATTERN,
    parse_cursor,
    parse_serial,
)
from payguard.store.uow import UnitOfWork

__all__ = ["router"]

router = APIRouter(prefix="/api/admin", tags=["admin views"])

ID_PATTERN = r"^[A-Za-z0-9_-]{1,40}$"
Limit = Annotated[int, Query(ge=1, le=200, description="rows per page")]
TimeCursor = Annotated[str | None, Query(max_length=300, pattern=CURSOR_PATTERN,
                                         description="next_cursor of the previous page")]
SerialCursor = Annotated[str | None, Query(max_length=18, pattern=SERIAL_CURSOR_PATTERN,
                                           description="next_cursor of the previous page")]
PurchaseKind = Literal["product", "program", "topup"]


@router.get("/purchases", response_model=PurchasePage)
async def purchases(
    ctx: Ctx, _admin: Admin,
    status: PurchaseStatusField | None = None,
    kind: PurchaseKind | None = None,
    user_id: Annotated[str | None, Query(pattern=ID_PATTERN)] = None,
    since: Annotated[AwareDatetime | None, Query(description="created at or after")] = None,
    until: Annotated[AwareDatetime | None, Query(description="created before")] = None,
    q: Annotated[str | None, Query(min_length=1, max_length=255, description=(
        "exact order number, receipt number, provider session id or purchase id"))] = None,
    limit: Limit = 50,
    cursor: TimeCursor = None,
) -> dict[str, Any]:
    """Purchases of every user, newest first, filtered and searched, with cursor paging."""
    if since is not None and until is not None and since >= until:
        raise ValidationFailed("since must be before until",
                               errors=[{"loc": ["query", "until"], "msg": "not after since"}])
    f = admin_purchases.PurchaseFilter(status=status, user_id=user_id, kind=kind,
                                       since=since, until=until, q=q.strip() if q else None)
    after = parse_cursor(cursor)
    async with ctx.db.read() as uow:
        return await admin_purchases.search_purchases(uow.conn, f, limit=limit, cursor=after)


@router.get("/purchases/{purchase_id}/detail", response_model=PurchaseDetail)
async def purchase_detail(purchase_id: Annotated[str, Path(pattern=ID_PATTERN)], ctx: Ctx,
                          _admin: Admin) -> dict[str, Any]:
    """A purchase with its ledger entries, receipt, items, provider session, webhook
    events, emails and idempotency keys."""
    async with ctx.db.read() as uow:
        return await admin_purchases.purchase_detail(uow.conn, purchase_id)


@router.get("/users", response_model=UserPage)
async def users(
    ctx: Ctx, _admin: Admin,
    q: Annotated[str | None, Query(min_length=1, max_length=320, description=(
        "exact user id, or part of the email or name"))] = None,
    limit: Limit = 50,
    cursor: TimeCursor = None,
) -> dict[str, Any]:
    """Users newest first, each with the balance of their wallet in the default currency."""
    after = parse_cursor(cursor)
    async with ctx.db.read() as uow:
        return await admin_users.list_users(uow.conn, ctx.settings.currency, q=q, limit=limit,
                                            cursor=after)


@router.get("/users/{user_id}/journal", response_model=UserJournal)
async def user_journal(
    user_id: Annotated[str, Path(pattern=ID_PATTERN)], ctx: Ctx, _admin: Admin,
    limit: Limit = 50,
    cursor: SerialCursor = None,
) -> dict[str, Any]:
    """The user and their wallet journal, newest entry first."""
    after = parse_serial(cursor)
    async with ctx.db.read() as uow:
        return await admin_users.user_journal(uow.conn, user_id, ctx.settings.currency,
                                              limit=limit, cursor=after)


@router.get("/webhooks", response_model=WebhookPage)
async def webhook_inbox(ctx: Ctx, _admin: Admin, state: InboxState | None = None,
                        limit: Limit = 50, cursor: TimeCursor = None) -> dict[str, Any]:
    """Webhook events newest first, each once with its outcome and delivery count."""
    after = parse_cursor(cursor)
    async with ctx.db.read() as uow:
        return await list_events(uow.conn, state=state, limit=limit, cursor=after)


@router.get("/outbox", response_model=EmailPage)
async def outbox(ctx: Ctx, _admin: Admin, state: admin_outbox.OutboxState | None = None,
                 limit: Limit = 50, cursor: SerialCursor = None) -> dict[str, Any]:
    """Outbox messages newest first: pending (``retrying`` once one attempt failed), sent,
    dead."""
    after = parse_serial(cursor)
    async with ctx.db.read() as uow:
        return await admin_outbox.list_messages(uow.conn, state=state, limit=limit,
                                                cursor=after)


@router.post("/outbox/{message_id}/retry", response_model=Email,
             responses={200: {"model": Email, "description": "the message, pending again"}})
async def retry_email(message_id: Annotated[str, Path(pattern=SERIAL_CURSOR_PATTERN)],
                      request: Request, ctx: Ctx, admin: Admin) -> Response:
    """Requeue a dead email now, with a fresh attempt budget. Only ``dead`` messages
    (else ``409 INVALID_STATE``); an ``Idempotency-Key`` is accepted, as on every POST."""
    async def effects(uow: UnitOfWork, _claim: Claim | None) -> StoredResponse:
        return json_response(await admin_outbox.retry_message(uow, ctx, int(message_id)))

    return await run_idempotent(request, ctx, admin, effects, required=False)


@router.get("/programs", response_model=list[AdminProgram])
async def programs(ctx: Ctx, _admin: Admin) -> list[dict[str, Any]]:
    """Programs with class-rep seats sold, held by open checkouts, and left."""
    async with ctx.db.read() as uow:
        return await admin_catalog.programs_with_seats(uow.conn)


@router.get("/products", response_model=list[AdminProduct])
async def products(ctx: Ctx, _admin: Admin) -> list[dict[str, Any]]:
    """Products with their stock items by state."""
    async with ctx.db.read() as uow:
        return await admin_catalog.products_with_stock(uow.conn)
