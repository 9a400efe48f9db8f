"""The dashboard in a real browser: a user buys from the wallet and pays a program on the
simulator's page; the operator finds the card purchase by its receipt number, refunds it
and sees the ledger entries. Every view is screenshotted under artifacts/screenshots/,
no page logs a console error, and the user's page never calls an admin endpoint."""

from __future__ import annotations

import re
import time
import uuid
from typing import Any

from playwright.sync_api import expect

from tests.browser.conftest import ConsoleGuard, Seed, screenshot, sign_in
from tests.support.server import LiveServer


def panel(page: Any, title: str) -> Any:
    return page.locator("section.card", has=page.get_by_role("heading", name=title, exact=True))


def until(check: Any, page: Any, what: str, within: float = 25.0) -> None:
    """Click the dashboard's Refresh until ``check()`` holds."""
    deadline = time.monotonic() + within
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        page.click("#refresh-now")
        page.wait_for_timeout(300)


def test_buy_pay_find_by_receipt_refund_and_see_the_ledger(
        context: Any, server: LiveServer, seed: Seed, guard: ConsoleGuard) -> None:
    tag = uuid.uuid4().hex[:6]
    user = seed.post("/api/admin/users", {"email": f"ann-{tag}@t.test", "name": "Ann Buyer"})
    seed.post(f"/api/admin/wallets/{user['id']}/adjustments",
              {"amount": 20_000, "reason": "opening balance"}, key=str(uuid.uuid4()))
    seed.post("/api/admin/products", {
        "sku": f"EBOOK-{tag}", "name": f"Ebook {tag}", "price": 1_500,
        "items": [f"KEY-{tag}-{i}" for i in range(3)]})
    seed.post("/api/admin/programs", {
        "title": f"Course {tag}", "full_price": 9_900, "class_rep_limit": 2,
        "class_rep_discount": 1_000})

    # The user: sign in, buy from the wallet, check out the program and pay on the page.
    upage = guard.watch(context.new_page(), "user")
    sign_in(upage, server, user["token"])
    expect(upage.locator("#role-badge")).to_have_text("user")
    products = panel(upage, "Products")
    products.locator("tr", has_text=f"Ebook {tag}").get_by_role("button", name="Buy").click()
    expect(upage.locator("#banner")).to_contain_text(f"Bought Ebook {tag}")
    expect(upage.locator("#banner")).to_contain_text(re.compile(r"receipt SC\d{10}"))

    programs = panel(upage, "Programs")
    with context.expect_page() as popup_info:
        programs.locator("tr", has_text=f"Course {tag}").get_by_role(
            "button", name="Checkout").click()
    sim = guard.watch(popup_info.value, "simulator")
    sim.wait_for_url(re.compile(r"/sim/checkout/cs_"))
    expect(sim.get_by_text("Simulated checkout")).to_be_visible()
    screenshot(sim, "simulator-checkout")
    sim.get_by_role("button", name="Pay", exact=True).click()
    sim.wait_for_url(re.compile(r"result=success"))
    expect(sim.locator("#banner")).to_contain_text("Payment submitted")

    purchases = panel(upage, "Purchases")
    until(lambda: purchases.locator("tr", has_text="program").filter(
        has_text="completed").count() == 1, upage, "the program purchase to complete")
    expect(purchases.locator("tbody tr")).to_have_count(2)
    screenshot(upage, "user")
    card_purchase = next(p for p in seed.get("/api/purchases", user["token"])
                         if p["kind"] == "program")
    receipt = card_purchase["receipt_number"]
    assert receipt

    # The operator: sign in, find the card purchase by its receipt number, refund it.
    apage = guard.watch(context.new_page(), "admin")
    sign_in(apage, server, server.admin_token)
    expect(apage.locator("#role-badge")).to_have_text("admin")
    for _ in range(3):  # three metric samples, so the charts have lines to draw
        apage.click("#refresh-now")
        apage.wait_for_timeout(400)
    expect(apage.locator("#chart-rps svg")).to_be_visible()
    screenshot(apage, "admin-overview")

    apage.get_by_role("link", name="Purchases", exact=True).click()
    apage.get_by_label("search").fill(receipt)
    apage.get_by_role("button", name="Search", exact=True).click()
    rows = apage.locator("#admin-purchases tbody tr")
    expect(rows).to_have_count(1)
    expect(rows.first).to_contain_text(receipt)
    screenshot(apage, "admin-purchases")
    rows.first.get_by_role("link", name=card_purchase["order_number"]).click()

    expect(apage.locator("#purchase-summary")).to_contain_text("completed")
    expect(apage.locator("#purchase-webhooks")).to_contain_text("checkout.session.completed")
    expect(apage.locator("#purchase-keys")).to_contain_text("/api/checkout/sessions")
    apage.get_by_label("refund reason").fill("customer asked, charged twice")
    apage.get_by_role("button", name="Refund purchase").click()
    expect(apage.locator("#refund-card .result")).to_contain_text("refunded")
    expect(apage.locator("#refund-card .result")).to_contain_text("Idempotency-Key")
    ledger = apage.locator("#purchase-ledger tbody tr")
    expect(ledger).to_have_count(4)  # card -> revenue on payment, and back on refund
    expect(apage.locator("#purchase-ledger")).to_contain_text("customer asked, charged twice")
    expect(apage.locator("#purchase-summary")).to_contain_text("refunded")
    screenshot(apage, "admin-purchase-detail")
    assert seed.get(f"/api/purchases/{card_purchase['id']}", user["token"])["status"] == (
        "refunded")

    # Every other admin view, each one screenshotted.
    apage.get_by_role("link", name="Users", exact=True).click()
    expect(apage.locator("#admin-users")).to_contain_text(f"ann-{tag}@t.test")
    screenshot(apage, "admin-users")
    apage.locator("#admin-users").get_by_role("link", name="Ann Buyer").click()
    # opening balance and the ebook; the card payment and its refund never touch the wallet
    expect(apage.locator("#user-journal tbody tr")).to_have_count(2)
    screenshot(apage, "admin-user-journal")
    for tab, name, text in (
            ("Webhooks", "webhooks", "checkout.session.completed"),
            ("Outbox", "outbox", f"ann-{tag}@t.test"),
            ("Catalog", "catalog", f"Course {tag}"),
            ("All metrics", "metrics", "payguard_http_requests"),
            ("Create", "create", "Create user")):
        apage.get_by_role("link", name=tab, exact=True).click()
        expect(apage.locator("#view")).to_contain_text(text)
        screenshot(apage, f"admin-{name}")

    guard.assert_clean()
    assert not [u for u in guard.requests["user"] if "/api/admin/" in u]
    assert any("/api/admin/purchases" in u for u in guard.requests["admin"])
