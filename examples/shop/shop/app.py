"""The shop: its own users and bearer tokens, and four payguard guarantees.

- ``POST /charges`` (Idempotency-Key required): debits the caller's balance and issues the
  next gapless invoice number, at most once per key, in one transaction with the stored
  response.
- ``GET /balance``: the caller's ledger balance, which can never go below zero.
- ``POST /events`` and ``POST /events/{id}/tickets``: a seat counter that never sells more
  than the event's seats.
- ``POST /events/{id}/seats``: more seats, under a per-event lock whose fencing token is
  checked in the writing transaction.
- ``POST /users``: a demo sign-up with an opening balance.

Run: ``SHOP_DATABASE_URL=sqlite:///shop.db uvicorn --factory shop.app:app_from_env``.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from fastapi import Depends, FastAPI, Header, HTTPException
from pydantic import BaseModel, Field
from sqlalchemy import insert, select, update

import payguard
from payguard import Lease, UnitOfWork
from payguard.fastapi import IdempotentRequest, Payguard
from shop.models import events, invoices, metadata, tickets, users

CURRENCY = "EUR"
FUNDING, REVENUE = "shop:funding", "shop:revenue"


class SoldOut(payguard.PayguardError):
    """The event has no seat left (an app's own error, rendered and stored like payguard's)."""

    status, code, title = 409, "SOLD_OUT", "Sold out"


class NoSuchEvent(payguard.PayguardError):
    """The event id names no event."""

    status, code, title = 404, "NOT_FOUND", "No such event"


@dataclass(frozen=True)
class User:
    id: str
    name: str


class NewUser(BaseModel):
    name: str = Field(min_length=1, max_length=100)
    balance: int = Field(ge=0, le=10_000_000)


class NewCharge(BaseModel):
    amount: int = Field(gt=0, le=1_000_000)


class MoreSeats(BaseModel):
    seats: int = Field(gt=0, le=100_000)


class NewEvent(BaseModel):
    name: str = Field(min_length=1, max_length=100)
    seats: int = Field(ge=0, le=100_000)


def wallet(user_id: str) -> str:
    return f"wallet:{user_id}"


def create_app(database_url: str, *, lock_backend: str = "sql") -> FastAPI:
    pg = Payguard(database_url, prefix="payguard_", create_tables=True, lock_backend=lock_backend)
    ledger, numbers, seats = (payguard.Ledger(pg.tables), payguard.Sequences(pg.tables),
                              payguard.Counters(pg.tables))

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        # payguard's tables exist by now (``pg.install`` runs its lifespan around this one).
        async with pg.db.engine.begin() as conn:
            await conn.run_sync(metadata.create_all)

        async def platform(uow: UnitOfWork) -> None:
            await ledger.open_account(uow.conn, FUNDING, currency=CURRENCY, kind="funding",
                                      allow_negative=True)
            await ledger.open_account(uow.conn, REVENUE, currency=CURRENCY, kind="revenue")

        await pg.db.transaction(platform)
        yield

    app = FastAPI(title="shop", lifespan=lifespan)
    pg.install(app)

    async def current_user(authorization: str = Header()) -> User:
        token = authorization.removeprefix("Bearer ")
        async with pg.db.read() as uow:
            row = (await uow.conn.execute(
                select(users.c.id, users.c.name).where(users.c.api_token == token))).first()
        if row is None:
            raise HTTPException(401, "unknown token")
        return User(row.id, row.name)

    idempotent = pg.idempotent(current_user)

    @app.post("/users", status_code=201)
    async def sign_up(body: NewUser) -> dict[str, object]:
        user_id, token = "u_" + secrets.token_hex(6), secrets.token_hex(16)

        async def tx(uow: UnitOfWork) -> None:
            await uow.conn.execute(insert(users).values(id=user_id, name=body.name,
                                                        api_token=token))
            await ledger.open_account(uow.conn, wallet(user_id), currency=CURRENCY,
                                      owner_id=user_id)
            if body.balance:
                await ledger.transfer(uow.conn, debit=FUNDING, credit=wallet(user_id),
                                      amount=body.balance, currency=CURRENCY, kind="opening")

        await pg.db.transaction(tx)
        return {"id": user_id, "token": token}

    @app.get("/balance")
    async def balance(user: User = Depends(current_user)) -> dict[str, object]:
        async with pg.db.read() as uow:
            return {"balance": await ledger.balance(uow.conn, wallet(user.id)),
                    "currency": CURRENCY}

    @app.post("/charges", status_code=201)
    async def charge(body: NewCharge, user: User = Depends(current_user),
                     idem: IdempotentRequest = Depends(idempotent)) -> object:
        async def effects(uow: UnitOfWork) -> dict[str, object]:
            # Raises InsufficientBalance (400, stored for the key) when the balance is short.
            moved = await ledger.transfer(uow.conn, debit=wallet(user.id), credit=REVENUE,
                                          amount=body.amount, currency=CURRENCY,
                                          kind="charge")
            # Taken last: every charge queues on this one row until its commit.
            number = await numbers.next(uow.conn, "invoice")
            await uow.conn.execute(insert(invoices).values(
                number=number, user_id=user.id, amount=body.amount, transfer_id=moved.id))
            return {"invoice": number, "transfer": moved.id,
                    "balance": moved.debit_balance_after}

        return await idem.run(effects, status_code=201)

    @app.post("/events", status_code=201)
    async def create_event(body: NewEvent, _user: User = Depends(current_user)) -> object:
        event_id = "ev_" + secrets.token_hex(6)

        async def tx(uow: UnitOfWork) -> None:
            await uow.conn.execute(insert(events).values(id=event_id, name=body.name,
                                                         seats=body.seats))
            await seats.create(uow.conn, f"event:{event_id}", body.seats)

        await pg.db.transaction(tx)
        return {"id": event_id}

    @app.post("/events/{event_id}/tickets", status_code=201)
    async def buy_ticket(event_id: str, user: User = Depends(current_user),
                         idem: IdempotentRequest = Depends(idempotent)) -> object:
        ticket_id = "tk_" + secrets.token_hex(6)

        async def effects(uow: UnitOfWork) -> dict[str, object]:
            if not await seats.reserve(uow.conn, f"event:{event_id}", ticket_id, keep=True):
                raise SoldOut(f"event {event_id} has no seat left")
            await uow.conn.execute(insert(tickets).values(id=ticket_id, event_id=event_id,
                                                          user_id=user.id))
            return {"ticket": ticket_id}

        return await idem.run(effects, status_code=201)

    @app.post("/events/{event_id}/seats")
    async def add_seats(event_id: str, body: MoreSeats, _user: User = Depends(current_user),
                        lease: Lease = Depends(pg.hold("event:{event_id}", wait=5)),
                        ) -> dict[str, object]:
        async def tx(uow: UnitOfWork) -> int:
            # The fence refuses a writer whose lease lapsed while a newer holder wrote.
            await payguard.Fence(f"event:{event_id}", lease.fencing_token,
                                 pg.tables).check(uow.conn)
            row = (await uow.conn.execute(
                update(events).where(events.c.id == event_id)
                .values(seats=events.c.seats + body.seats).returning(events.c.seats))).first()
            if row is None:
                raise NoSuchEvent(f"no event {event_id}")
            await seats.grow(uow.conn, f"event:{event_id}", body.seats)
            return int(row.seats)

        total = await pg.db.transaction(tx)
        return {"seats": total, "fencing_token": lease.fencing_token}

    return app


def app_from_env() -> FastAPI:
    """The app for ``uvicorn --factory``: ``SHOP_DATABASE_URL`` names the database."""
    return create_app(os.environ["SHOP_DATABASE_URL"],
                      lock_backend=os.environ.get("SHOP_LOCK_BACKEND", "sql"))
