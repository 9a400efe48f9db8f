"""mixed: every other scenario at once, across many users; receipts checked across all."""

from __future__ import annotations

import asyncio

from payguard.race.api import SetupFailed
from payguard.race.client import EndpointMissing, Recorder
from payguard.race.numbers import check_contiguous, check_unique
from payguard.race.scenarios.base import REGISTRY, Context, Scenario, register
from payguard.race.types import Invariant, Sample

__all__ = ["Mixed"]

#: Sum of the components' default sizes that ``mixed``'s own size is spread over.
_SCALE_BASE = 300


@register
class Mixed(Scenario):
    name = "mixed"
    summary = "all scenarios at once across many users"
    default_requests = 150

    def planned(self) -> int:
        return sum(c.planned() for c in self.parts)

    async def setup(self) -> None:
        self.parts: list[Scenario] = []
        self.recorders: dict[str, Recorder] = {}
        self.skipped: list[str] = []
        for name, cls in REGISTRY.items():
            if cls is Mixed:
                continue
            missing = self.client.missing_routes(cls.routes)
            if missing:
                self.skipped.append(f"{name} ({missing[0]} not offered)")
                continue
            size = max(cls.min_requests(), round(cls.default_requests * self.n / _SCALE_BASE))
            rec = Recorder(self._tick)
            ctx = Context(
                client=self.client, api=self.api, recorder=rec, requests=size,
                exclusive=False, sim_url=self.ctx.sim_url,
                webhook_secret=self.ctx.webhook_secret, rng=self.ctx.rng,
                provider=self.ctx.provider, callback_auth=self.ctx.callback_auth,
            )
            part = cls(ctx)
            try:
                await part.setup()
            except EndpointMissing as exc:
                self.skipped.append(f"{name} ({exc})")
                continue
            self.parts.append(part)
            self.recorders[name] = rec
        if not self.parts:
            raise EndpointMissing("POST", "/api/purchases", 0)

    def _tick(self) -> None:
        # Read at call time: the progress callback is attached after setup.
        if self.ctx.recorder.on_sample is not None:
            self.ctx.recorder.on_sample()

    async def fire(self) -> None:
        outcomes = await asyncio.gather(*(p.fire() for p in self.parts), return_exceptions=True)
        kept: list[Scenario] = []
        for part, outcome in zip(self.parts, outcomes, strict=True):
            if isinstance(outcome, EndpointMissing):
                self.skipped.append(f"{part.name} ({outcome})")
            elif isinstance(outcome, BaseException):
                raise SetupFailed(f"{part.name}: {type(outcome).__name__}: {outcome}") from outcome
            else:
                kept.append(part)
        self.parts = kept

    async def verify(self) -> list[Invariant]:
        invariants: list[Invariant] = []
        receipts: list[str] = []
        for part in self.parts:
            for inv in await part.verify():
                invariants.append(Invariant(f"{part.name}: {inv.name}", inv.held, inv.evidence,
                                            inv.kind))
            receipts.extend(part.receipts)
        # Every receipt issued while the parts raced was seen in some response, so together
        # they must form one gapless run.
        invariants.append(check_unique(receipts, "all receipts unique"))
        invariants.append(check_contiguous(receipts, "all receipts contiguous"))
        self.receipts = receipts
        return invariants

    def samples(self) -> list[Sample]:
        return [
            Sample(f"{name}.{s.op}", s.status, s.code, s.latency, s.attempts, s.ended_at)
            for name, rec in self.recorders.items() for s in rec.samples
        ]
