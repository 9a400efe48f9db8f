"""The scenario contract (setup -> fire -> verify) and the registry the runner reads."""

from __future__ import annotations

import asyncio
import random
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar

from payguard.race.api import Api
from payguard.race.client import RaceClient, Recorder, Reply
from payguard.race.stats import outcome_label
from payguard.race.types import Invariant, Sample, is_transient

__all__ = [
    "REGISTRY",
    "Context",
    "Scenario",
    "expect_outcomes",
    "gather",
    "outcome_counts",
    "outcome_label_reply",
    "register",
]

T = TypeVar("T")


@dataclass
class Context:
    """What a scenario may use: the client, the admin helpers, and facts about the target."""

    client: RaceClient
    api: Api
    recorder: Recorder
    requests: int | None = None  # None: the scenario's default size
    #: False while other scenarios run at the same time (``mixed``): checks that assume the
    #: harness is the only writer (receipt contiguity) are then left to ``mixed`` itself.
    exclusive: bool = True
    sim_url: str | None = None
    webhook_secret: str | None = None
    #: ``stripe`` or ``phonepe``: which simulator's pay page and callback format to use.
    provider: str = "stripe"
    #: PhonePe only: the ``Authorization`` value its callbacks carry (None: unknown).
    callback_auth: str | None = None
    rng: random.Random = field(default_factory=random.Random)


class Scenario(ABC):
    name: ClassVar[str]
    summary: ClassVar[str]
    #: (method, path template) the scenario needs; absent ones make it SKIPPED.
    routes: ClassVar[tuple[tuple[str, str], ...]] = ()
    default_requests: ClassVar[int] = 40

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.api = ctx.api
        self.client = ctx.client
        self.n = max(self.min_requests(), ctx.requests or self.default_requests)
        self.receipts: list[str] = []

    @classmethod
    def min_requests(cls) -> int:
        return 2

    def planned(self) -> int:
        """How many recorded requests ``fire`` will make (sizes the progress bar)."""
        return self.n

    def samples(self) -> list[Sample]:
        return list(self.ctx.recorder.samples)

    async def request(self, op: str, method: str, path: str, **kw: Any) -> Reply:
        return await self.client.request(method, path, rec=self.ctx.recorder, op=op, **kw)

    @abstractmethod
    async def setup(self) -> None: ...

    @abstractmethod
    async def fire(self) -> None: ...

    @abstractmethod
    async def verify(self) -> list[Invariant]: ...


REGISTRY: dict[str, type[Scenario]] = {}

S = TypeVar("S", bound=type[Scenario])


def register(cls: S) -> S:
    REGISTRY[cls.name] = cls
    return cls


async def gather(factories: Iterable[Callable[[], Awaitable[T]]]) -> list[T]:
    """Start every request at once (the client's pool bounds how many are in flight)."""
    return list(await asyncio.gather(*(f() for f in factories)))


def outcome_counts(replies: Sequence[Reply]) -> Counter[str]:
    return Counter(outcome_label_reply(r) for r in replies)


def outcome_label_reply(reply: Reply) -> str:
    return outcome_label(Sample("", reply.status, reply.code, 0.0))


def expect_outcomes(
    name: str, replies: Sequence[Reply], expected: dict[str, int]
) -> Invariant:
    """The exact multiset of outcomes, e.g. ``{"201": 20, "400 INSUFFICIENT_BALANCE": 20}``.

    Requests that never got a final answer (see ``Sample.finished``) are a liveness failure,
    reported by the runner; here they only make the check weaker: it then holds when no
    final outcome exceeds its expected count (nothing wrong was observed).
    """
    got = outcome_counts(replies)
    want = Counter({k: v for k, v in expected.items() if v})
    shown = ", ".join(f"{k}: {v}" for k, v in sorted(got.items())) or "no replies"
    if got == want:
        return Invariant(name, True, shown)
    wanted = ", ".join(f"{k}: {v}" for k, v in sorted(want.items()))
    unfinished = sum(1 for r in replies if is_transient(r.status, r.code))
    final = Counter(outcome_label_reply(r) for r in replies if not is_transient(r.status, r.code))
    if unfinished and all(n <= want[k] for k, n in final.items()):
        return Invariant(name, True, f"expected {wanted}; got {shown}: {unfinished} unfinished "
                                     "(a liveness failure), no final outcome over its count")
    return Invariant(name, False, f"expected {wanted}; got {shown}")
