"""The simulator as a service: state shared by several instances through its SQLite file,
the hosted page without JavaScript, and mounting under /sim as ``payguard serve`` does."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from payguard.errors import ProviderUnavailable
from payguard.providers import StripeProvider, create_provider
from payguard.providers.simulator import create_simulator_app
from tests.integration.providers.conftest import (
    API_KEY,
    SimFactory,
    SimHarness,
    create_session,
    make_settings,
    serve,
)


async def test_instances_share_state_and_one_key_creates_one_session(
        start_sim: SimFactory) -> None:
    a = await start_sim()
    b = await start_sim()  # a second app instance on the same simulator.db, own port
    pa = StripeProvider(make_settings(a.tmp_path, stripe_api_base=a.url))
    pb = StripeProvider(make_settings(a.tmp_path, stripe_api_base=b.url))
    try:
        results = await asyncio.gather(*[
            create_session(p, key="shared-key") for p in (pa, pb) * 5])
        assert len({s.id for s in results}) == 1
        session = results[0]
        assert session.url is not None
        await b.pay(session.id)
        assert (await pa.retrieve_checkout_session(session.id)).is_paid
        rows = await a.settled(session.id)  # delivered by b, visible through a
        assert [r["state"] for r in rows] == ["delivered"]
    finally:
        await pa.close()
        await pb.close()


async def test_hosted_page_pays_without_javascript(sim: SimHarness,
                                                   provider: StripeProvider) -> None:
    session = await create_session(provider, amount=123456)
    assert session.url is not None
    page = await sim.http.get(session.url)
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert "1,234.56 USD" in page.text and "<script" not in page.text
    assert f'action="{session.id}/pay"' in page.text

    declined = await sim.http.post(f"{session.url}/pay", data={"outcome": "failed"})
    assert declined.status_code == 303
    assert declined.headers["location"] == f"{session.url}?declined=1"
    again = await sim.http.get(declined.headers["location"])
    assert "declined" in again.text

    paid = await sim.http.post(f"{session.url}/pay", data={"outcome": "succeeded"})
    assert paid.status_code == 303
    assert paid.headers["location"] == f"https://shop.test/ok?s={session.id}"
    assert (await provider.retrieve_checkout_session(session.id)).is_paid
    assert "complete" in (await sim.http.get(session.url)).text


async def test_unknown_parameter_is_rejected_like_stripe(sim: SimHarness) -> None:
    r = await sim.http.post(f"{sim.url}/v1/checkout/sessions", headers=sim.auth(),
                            data={"mode": "payment", "bogus": "1"})
    assert r.status_code == 400
    assert r.json()["error"] == {"type": "invalid_request_error", "code": "parameter_unknown",
                                 "param": "bogus", "message": "Received unknown parameter: bogus"}


async def test_mounted_under_sim_with_the_default_api_base(tmp_path: Path) -> None:
    parent = FastAPI()
    settings = make_settings(tmp_path)
    sim_app = create_simulator_app(settings)
    parent.mount("/sim", sim_app)
    try:
        async with serve(parent) as url:
            # public_url -> default api base {public_url}/sim, exactly as serve will run it.
            provider = create_provider(make_settings(tmp_path, public_url=url))
            try:
                assert provider.name == "simulated"
                session = await create_session(provider)
                assert session.url == f"{url}/sim/checkout/{session.id}"
                async with httpx.AsyncClient() as http:
                    page = await http.get(session.url)
                    assert page.status_code == 200
                    r = await http.get(f"{url}/sim/v1/checkout/sessions/{session.id}",
                                       headers={"Authorization": f"Bearer {API_KEY}"})
                    assert r.json()["id"] == session.id
            finally:
                await provider.close()
    finally:
        await sim_app.state.simulator.aclose()


async def test_concurrent_pays_complete_a_session_once(start_sim: SimFactory) -> None:
    a = await start_sim()
    b = await start_sim()
    provider = StripeProvider(make_settings(a.tmp_path, stripe_api_base=a.url))
    try:
        session = await create_session(provider)
        responses = await asyncio.gather(*[
            h.http.post(f"{h.url}/checkout/{session.id}/pay", json={"outcome": "succeeded"})
            for h in (a, b) * 4])
        assert sorted(r.status_code for r in responses) == [200] + [400] * 7
        rows = await a.settled(session.id)
        assert [(r["event_type"], r["state"]) for r in rows] == [
            ("checkout.session.completed", "delivered")]
    finally:
        await provider.close()


async def test_injected_failure_is_not_stored_under_the_key(start_sim: SimFactory) -> None:
    sim = await start_sim(failure_rate=1.0)
    provider = StripeProvider(make_settings(sim.tmp_path, stripe_api_base=sim.url))
    try:
        with pytest.raises(ProviderUnavailable):
            await create_session(provider, key="retry-me")
        sim.sim.options = replace(sim.sim.options, failure_rate=0.0)
        first = await create_session(provider, key="retry-me")
        assert await create_session(provider, key="retry-me") == first
    finally:
        await provider.close()
