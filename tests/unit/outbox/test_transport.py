from __future__ import annotations

from datetime import UTC, datetime

import pytest

from payguard.outbox import ClaimedMessage, message_id
from payguard.outbox.transport import build_email, parse_smtp_url


def test_parse_plain_smtp_url_with_credentials() -> None:
    t = parse_smtp_url("smtp://mailer%40corp:p%3Ass@mail.example.com:2525")
    assert (t.hostname, t.port, t.username, t.password, t.use_tls) == (
        "mail.example.com", 2525, "mailer@corp", "p:ss", False)


def test_parse_defaults_and_tls() -> None:
    assert parse_smtp_url("smtp://localhost").port == 25
    t = parse_smtp_url("smtps://relay.example.com")
    assert (t.port, t.use_tls, t.username, t.password) == (465, True, None, None)


@pytest.mark.parametrize("url", ["http://x", "smtp://", "localhost:25"])
def test_parse_refuses_other_urls(url: str) -> None:
    with pytest.raises(ValueError):
        parse_smtp_url(url)


def test_message_id_is_stable_per_key_and_distinct_across_keys() -> None:
    a = message_id("purchase-confirmation:p1", "payguard@shop.example")
    assert a == message_id("purchase-confirmation:p1", "payguard@shop.example")
    assert a != message_id("purchase-confirmation:p2", "payguard@shop.example")
    assert a.startswith("<outbox.") and a.endswith("@shop.example>")


def test_build_email_is_identical_on_resend() -> None:
    msg = ClaimedMessage(id=1, dedupe_key="k1", kind="confirmation", recipient="a@b.example",
                         subject="Hi", body="Body\n", created_at=datetime(2026, 1, 2, 3, 4, 5),
                         attempt=1, claimed_until=datetime.now(UTC))
    first = build_email(msg, mail_from="payguard@localhost")
    again = build_email(msg, mail_from="payguard@localhost")
    assert first.as_bytes() == again.as_bytes()
    assert first["Message-ID"] == message_id("k1", "payguard@localhost")
    assert first["Date"] == "Fri, 02 Jan 2026 03:04:05 +0000"
    assert (first["From"], first["To"], first["Subject"]) == (
        "payguard@localhost", "a@b.example", "Hi")
    assert first.get_content() == "Body\n"
