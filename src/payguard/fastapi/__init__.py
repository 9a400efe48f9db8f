"""FastAPI (and Starlette / plain ASGI) integration of payguard's primitives.

    from payguard.fastapi import Payguard

    pg = Payguard("sqlite:///shop.db", prefix="payguard_", create_tables=True)
    app = FastAPI()
    pg.install(app)        # lifespan (tables, lock service) + errors as problem+json

    @app.post("/charges", status_code=201)
    async def charge(body: Charge, idem: IdempotentRequest = Depends(pg.idempotent(user_id))):
        async def effects(uow: UnitOfWork) -> dict[str, object]:
            ...   # writes in the same transaction that stores the response
            return {"id": charge_id}
        return await idem.run(effects, status_code=201)

    @app.post("/accounts/{account_id}/close")
    async def close(lease: Lease = Depends(pg.hold("account:{account_id}"))): ...

This package imports FastAPI and Starlette; ``import payguard`` does not. Nothing here
imports the reference service's web layer (``payguard.api``).
"""

from payguard.fastapi.idempotency import IdempotentRequest, to_response
from payguard.fastapi.middleware import IdempotencyMiddleware
from payguard.fastapi.wiring import Payguard

__all__ = ["IdempotencyMiddleware", "IdempotentRequest", "Payguard", "to_response"]
