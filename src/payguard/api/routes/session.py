"""``GET /api/session``: who the bearer token belongs to, for any valid token.

The dashboard asks this once at sign-in to pick its view, so neither view ever calls an
endpoint that answers it 403 (which a browser logs as a console error).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends

from payguard.api.admin_models import SessionInfo
from payguard.api.deps import get_principal
from payguard.service.principal import Principal

__all__ = ["router"]

router = APIRouter(prefix="/api", tags=["session"])


@router.get("/session", response_model=SessionInfo)
async def session(principal: Annotated[Principal, Depends(get_principal)]) -> dict[str, Any]:
    return {"role": "admin" if principal.is_admin else "user", "id": principal.user_id,
            "email": principal.email, "name": principal.name}
