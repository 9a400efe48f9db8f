"""The harness retries like a well-behaved client, and measures recovery from faults."""

from __future__ import annotations

import random
import time
from collections import Counter

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from payguard.race.client import RaceClient, Recorder
from payguard.race.faults import FaultSchedule
from payguard.race.liveness import recovery_times
from payguard.race.types import FaultEvent, RaceConfig, Sample
from tests.race.conftest import serve


def _flaky_app(answers: list[tuple[int, str | None]]) -> tuple[FastAPI, list[str | None]]:
    """Answers ``answers`` in order (then 201), remembering each request's key."""
    app = FastAPI()
    keys: list[str | None] = []

    @app.post("/pay")
    async def pay(request: Request) -> JSONResponse:
        keys.append(request.headers.get("idempotency-key"))
        if len(keys) <= len(answers):
            status, code = answers[len(keys) - 1]
            return JSONResponse({"code": code}, status_code=status,
                                headers={"Retry-After": "1"} if code else None)
        return JSONResponse({"ok": True}, status_code=201)

    return app, keys


async def test_transient_answers_are_retried_with_the_same_key_after_retry_after() -> None:
    app, keys = _flaky_app([(409, "PAYMENT_IN_PROGRESS"), (503, "LOCK_TIMEOUT"),
                            (409, "REQUEST_IN_PROGRESS")])
    with serve(app) as url:
        async with RaceClient([url], "t", retry_for=30) as client:
            rec = Recorder()
            started = time.monotonic()
            reply = await client.request("POST", "/pay", key="k1", rec=rec, op="pay")
    assert reply.status == 201 and reply.attempts == 4
    assert keys == ["k1"] * 4  # never a new key: a new key could apply it twice
    assert time.monotonic() - started >= 3 * 0.5  # Retry-After: 1 s, jittered down to 0.5
    assert rec.samples[0].finished


async def test_a_request_still_failing_at_the_bound_is_unfinished() -> None:
    app, keys = _flaky_app([(409, "PAYMENT_IN_PROGRESS")] * 100)
    with serve(app) as url:
        async with RaceClient([url], "t", retry_for=2) as client:
            rec = Recorder()
            reply = await client.request("POST", "/pay", key="k", rec=rec, op="pay")
    assert reply.status == 409 and 2 <= len(keys) <= 5
    assert not rec.samples[0].finished  # a liveness failure, not a final answer


async def test_final_4xx_answers_are_not_retried() -> None:
    app, keys = _flaky_app([(409, "OUT_OF_STOCK")])
    with serve(app) as url:
        async with RaceClient([url], "t", retry_for=30) as client:
            reply = await client.request("POST", "/pay", key="k")
    assert (reply.status, reply.attempts, len(keys)) == (409, 1, 1)


def test_recovery_is_measured_from_the_last_fault_a_request_lived_through() -> None:
    schedule = FaultSchedule(RaceConfig(), env=None, rng=random.Random(1))  # type: ignore[arg-type]
    schedule.started = 100.0
    schedule.events = [FaultEvent("kill", 1.0, 3.0, "k1"), FaultEvent("kill", 5.0, 7.0, "k2")]
    samples = [
        Sample("a", 201, None, latency=2.0, ended_at=108.0),  # lived 106..108: no fault
        Sample("b", 201, None, latency=8.0, ended_at=108.0),  # 100..108: faults at 101, 105
        Sample("c", 201, None, latency=4.0, ended_at=104.0),  # 100..104: fault at 101
        Sample("d", 0, None, latency=9.0, ended_at=109.0),  # never finished: not counted
    ]
    assert Counter(recovery_times(samples, schedule)) == Counter([3.0, 3.0])
