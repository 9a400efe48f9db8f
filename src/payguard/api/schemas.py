"""Request bodies. Unknown fields are refused, amounts are strict integers (no floats,
no numeric strings, no booleans)."""

from __future__ import annotations

from datetime import UTC
from typing import TYPE_CHECKING, Annotated

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainValidator,
    StrictBool,
    StrictInt,
    StrictStr,
    WithJsonSchema,
    model_validator,
)
from pydantic_core import PydanticCustomError

from payguard.states import PurchaseStatus

__all__ = [
    "PURCHASE_STATUSES",
    "AdjustmentIn",
    "CheckoutIn",
    "ItemsIn",
    "ProductIn",
    "ProgramIn",
    "PurchaseIn",
    "PurchaseStatusField",
    "RefundIn",
    "UserIn",
]

#: The purchase states as the API documents them.
PURCHASE_STATUSES = [s.value for s in PurchaseStatus]
_EXPECTED_STATUS = " or ".join(
    [", ".join(f"'{v}'" for v in PURCHASE_STATUSES[:-1]), f"'{PURCHASE_STATUSES[-1]}'"])


def _purchase_status(value: object) -> PurchaseStatus:
    """Pydantic's own enum check and message, without the schema component it would add."""
    if isinstance(value, str) and value in PURCHASE_STATUSES:
        return PurchaseStatus(value)
    raise PydanticCustomError("enum", "Input should be {expected}",
                              {"expected": _EXPECTED_STATUS})


if TYPE_CHECKING:
    PurchaseStatusField = PurchaseStatus
else:
    #: ``PurchaseStatus`` in a query parameter (``?status=``) or a response model, validated
    #: to the enum but declared over ``str``: FastAPI would add an enum-typed parameter to
    #: the OpenAPI components, and the contract documents the states as an inline enum.
    PurchaseStatusField = Annotated[
        str, PlainValidator(_purchase_status),
        WithJsonSchema({"type": "string", "enum": PURCHASE_STATUSES})]

# Every integer is bounded: amounts further by PAYGUARD_MAX_AMOUNT (a friendlier message),
# but nothing may reach the database beyond a signed 64-bit column or JSON's safe range.
MAX_INT = 2**53 - 1
PositiveInt = Annotated[StrictInt, Field(gt=0, le=MAX_INT)]
NonNegativeInt = Annotated[StrictInt, Field(ge=0, le=MAX_INT)]
SignedInt = Annotated[StrictInt, Field(ge=-MAX_INT, le=MAX_INT)]
#: Seats are counted one by one; a million is far beyond any real program.
MAX_SEATS = 1_000_000


def _rfc3339_only(value: object) -> object:
    """A datetime must be a string: pydantic would read an integer as Unix time (``0`` as
    1970-01-01), which is never what a client of this API meant."""
    if not isinstance(value, str):
        raise ValueError("must be an RFC 3339 date-time string with an offset")
    return value


# Aware (an offset is required) and converted to UTC on input, so what is stored and
# compared is the instant the client meant on every database.
UtcDatetime = Annotated[AwareDatetime, BeforeValidator(_rfc3339_only),
                        AfterValidator(lambda d: d.astimezone(UTC))]
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
    class_rep_limit: Annotated[StrictInt, Field(ge=0, le=MAX_SEATS)]
    class_rep_discount: NonNegativeInt = 0
    early_bird_discount: NonNegativeInt = 0
    early_bird_deadline: UtcDatetime | None = None


class AdjustmentIn(Strict):
    amount: SignedInt | None = None
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


