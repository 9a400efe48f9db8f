"""Request bodies. Unknown fields are refused, amounts are strict integers (no floats,
no numeric strings, no booleans)."""

from __future__ import annotations

from typing import Annotated

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    StrictStr,
    model_validator,
)

__all__ = [
    "AdjustmentIn",
    "CheckoutIn",
    "ItemsIn",
    "ProductIn",
    "ProgramIn",
    "PurchaseIn",
    "RefundIn",
    "UserIn",
]

PositiveInt = Annotated[StrictInt, Field(gt=0)]
NonNegativeInt = Annotated[StrictInt, Field(ge=0)]
Currency = Annotated[StrictStr, Field(pattern=r"^[A-Za-z]{3}$")]
ItemValue = Annotated[StrictStr, Field(min_length=1, max_length=1000)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class UserIn(Strict):
    email: Annotated[StrictStr, Field(min_length=3, max_length=320,
                                      pattern=r"^[^@\s]+@[^@\s]+$")]
    name: Annotated[StrictStr, Field(max_length=200)] | None = None


class ProductIn(Strict):
    sku: Annotated[StrictStr, Field(min_length=1, max_length=100)]
    name: Annotated[StrictStr, Field(min_length=1, max_length=200)]
    price: NonNegativeInt
    currency: Currency | None = None
    items: Annotated[list[ItemValue], Field(max_length=10_000)] = []


class ItemsIn(Strict):
    items: Annotated[list[ItemValue], Field(min_length=1, max_length=10_000)]


class ProgramIn(Strict):
    title: Annotated[StrictStr, Field(min_length=1, max_length=200)]
    full_price: NonNegativeInt
    currency: Currency | None = None
    class_rep_limit: NonNegativeInt
    class_rep_discount: NonNegativeInt = 0
    early_bird_discount: NonNegativeInt = 0
    early_bird_deadline: AwareDatetime | None = None


class AdjustmentIn(Strict):
    amount: StrictInt | None = None
    set_balance: NonNegativeInt | None = None
    reason: Annotated[StrictStr, Field(min_length=1, max_length=500)]
    currency: Currency | None = None

    @model_validator(mode="after")
    def _one_of(self) -> AdjustmentIn:
        if (self.amount is None) == (self.set_balance is None):
            raise ValueError("give exactly one of amount or set_balance")
        if self.amount == 0:
            raise ValueError("amount must not be zero")
        return self


class PurchaseIn(Strict):
    product_id: Annotated[StrictStr, Field(min_length=1, max_length=40)]
    quantity: Annotated[StrictInt, Field(gt=0, le=1000)] = 1


class RefundIn(Strict):
    reason: Annotated[StrictStr, Field(min_length=1, max_length=500)] = "requested by admin"


class CheckoutIn(Strict):
    program_id: Annotated[StrictStr, Field(min_length=1, max_length=40)] | None = None
    class_rep: StrictBool = False
    product_id: Annotated[StrictStr, Field(min_length=1, max_length=40)] | None = None
    quantity: Annotated[StrictInt, Field(gt=0, le=1000)] | None = None
    topup_amount: PositiveInt | None = None

    @model_validator(mode="after")
    def _one_target(self) -> CheckoutIn:
        targets = [self.program_id, self.product_id, self.topup_amount]
        if sum(t is not None for t in targets) != 1:
            raise ValueError("give exactly one of program_id, product_id or topup_amount")
        if self.class_rep and self.program_id is None:
            raise ValueError("class_rep applies to programs only")
        if self.quantity is not None and self.product_id is None:
            raise ValueError("quantity applies to products only")
        return self


