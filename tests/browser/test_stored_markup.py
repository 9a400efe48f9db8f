"""Stored XSS: a product name, a user name and a refund reason that contain markup are
shown as text in every view that shows them (user view, each admin view, the simulator's
payment page); no element is injected and no injected script runs.

Each payload would set ``window.__xss`` if it ever reached the page as HTML, and its
``<img src=x>`` would also be fetched (a failed load: the console guard would see it).
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from playwright.sync_api import expect

from tests.browser.conftest import ConsoleGuard, Seed, sign_in
from tests.support.server import LiveServer

USER_NAME = 'Eve <img src=x onerror="window.__xss=1"><b>bold</b>'
PRODUCT_NAME = 'Book <script>window.__xss=2</script><img src=x onerror="window.__xss=3">'
REASON = '<b>dup</b><img src=x onerror="window.__xss=4"><script>window.__xss=5</script>'


def assert_inert(page: Any, *texts: str) -> None:
    for text in texts:
        expect(page.locator("body")).to_contain_text(text)
    assert page.evaluate("window.__xss") is None
    assert page.locator("img").count() == 0
    assert page.locator("script:not([src])").count() == 0
    assert page.locator("b", has_text="dup").count() == 0
    assert page.locator("b", has_text="bold").count() == 0


@pytest.fixture(scope="module")
def marked(seed: Seed) -> dict[str, Any]:
    tag = uuid.uuid4().hex[:6]
    user = seed.post("/api/admin/users", {"email": f"eve-{tag}@t.test", "name": USER_NAME})
    seed.post(f"/api/admin/wallets/{user['id']}/adjustments",
              {"amount": 10_000, "reason": REASON}, key=str(uuid.uuid4()))
    product = seed.post("/api/admin/products", {
        "sku": f"XSS-{tag}", "name": PRODUCT_NAME, "price": 300,
        "items": [f"X-{tag}-{i}" for i in range(3)]})
    bought = seed.post("/api/purchases", {"product_id": product["id"]}, user["token"],
                       key=str(uuid.uuid4()))
    seed.post(f"/api/admin/purchases/{bought['id']}/refund", {"reason": REASON},
              key=str(uuid.uuid4()), expect=200)
    session = seed.post("/api/checkout/sessions", {"product_id": product["id"]},
                        user["token"], key=str(uuid.uuid4()))
    return {"user": user, "product": product, "purchase": bought, "session": session}


def test_markup_is_text_in_the_user_view(context: Any, server: LiveServer,
                                         marked: dict[str, Any], guard: ConsoleGuard) -> None:
    page = guard.watch(context.new_page(), "user")
    sign_in(page, server, marked["user"]["token"])
    expect(page.locator("#who")).to_contain_text(USER_NAME)
    expect(page.locator("#view")).to_contain_text(PRODUCT_NAME)
    expect(page.locator("#view")).to_contain_text(REASON)  # wallet entries: refund reason
    assert_inert(page, USER_NAME, PRODUCT_NAME, REASON)
    guard.assert_clean()


def test_markup_is_text_on_the_payment_page(context: Any, server: LiveServer,
                                            marked: dict[str, Any], guard: ConsoleGuard) -> None:
    # The page names the order, not the product; nothing the buyer typed gets in as HTML.
    page = guard.watch(context.new_page(), "simulator")
    page.goto(marked["session"]["url"])
    expect(page.locator("body")).to_contain_text(marked["session"]["order_number"])
    assert_inert(page)
    guard.assert_clean()


ADMIN_VIEWS = [
    ("#/purchases", [USER_NAME]),
    ("#/purchase/{purchase}", [USER_NAME, REASON]),
    ("#/users", [USER_NAME]),
    ("#/user/{user}", [USER_NAME, REASON]),
    ("#/catalog", [PRODUCT_NAME]),
    ("#/webhooks", []),
    ("#/outbox", []),
    ("#/overview", []),
]


def test_markup_is_text_in_every_admin_view(context: Any, server: LiveServer,
                                            marked: dict[str, Any],
                                            guard: ConsoleGuard) -> None:
    page = guard.watch(context.new_page(), "admin")
    sign_in(page, server, server.admin_token)
    for route, texts in ADMIN_VIEWS:
        page.evaluate("h => { location.hash = h; }", route.format(
            purchase=marked["purchase"]["id"], user=marked["user"]["id"]))
        expect(page.locator(".card-body", has_text="Loading…")).to_have_count(0)
        for text in texts:
            expect(page.locator("#view")).to_contain_text(text)
        assert_inert(page, *texts)
    guard.assert_clean()


def test_the_console_guard_fails_on_a_console_error(context: Any, server: LiveServer,
                                                    guard: ConsoleGuard) -> None:
    """The guard the other tests rely on does catch errors (it is not a test that can't
    fail): a console.error, an uncaught exception and a failed load each show up."""
    page = guard.watch(context.new_page(), "probe")
    page.goto(f"{server.url}/")
    page.evaluate("console.error('boom')")
    page.evaluate("setTimeout(() => { throw new Error('uncaught boom'); }, 0)")
    page.evaluate("fetch('/static/missing.png').catch(() => {})")
    page.wait_for_timeout(500)
    assert any("boom" in e for e in guard.errors)
    assert any("uncaught boom" in e for e in guard.errors)
    assert any("missing.png" in e or "404" in e for e in guard.errors)
    with pytest.raises(AssertionError):
        guard.assert_clean()
