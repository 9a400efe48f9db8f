"""Where a claimed message goes: an SMTP server (aiosmtplib) or the local mailbox.

The SMTP message carries a ``Message-ID`` derived from the dedupe key. Delivery is
at-least-once at this boundary: if the process dies (or stalls past its lease) after the
server accepted the message but before the row is marked sent, the message is sent again
on a later attempt, with the same ``Message-ID``, so the receiving side can recognise and
drop the duplicate. No protocol can close that gap from the sender's side alone; the
dispatcher keeps it small by refusing to start a send that its lease might not cover.
"""

from __future__ import annotations

import asyncio
import hashlib
from dataclasses import dataclass
from datetime import UTC
from email.message import EmailMessage
from email.utils import format_datetime
from typing import Protocol
from urllib.parse import unquote, urlsplit

import aiosmtplib

from payguard.outbox.types import ClaimedMessage

__all__ = [
    "MailboxTransport",
    "PermanentDeliveryError",
    "SmtpTarget",
    "SmtpTransport",
    "Transport",
    "build_email",
    "message_id",
    "parse_smtp_url",
]


class PermanentDeliveryError(Exception):
    """The server refused this message for good (5xx on the recipient or the content)."""


class Transport(Protocol):
    name: str

    async def deliver(self, message: ClaimedMessage) -> None:
        """Deliver or raise; ``PermanentDeliveryError`` means retrying is pointless."""
        ...


class MailboxTransport:
    """No SMTP configured: marking the row ``sent`` is the delivery (``list_mailbox``)."""

    name = "mailbox"

    async def deliver(self, message: ClaimedMessage) -> None:
        return None


@dataclass(frozen=True, slots=True)
class SmtpTarget:
    hostname: str
    port: int
    username: str | None
    password: str | None
    use_tls: bool  # implicit TLS (smtps://); plain smtp:// upgrades with STARTTLS if offered


def parse_smtp_url(url: str) -> SmtpTarget:
    """``smtp://user:pass@host:port`` (default port 25) or ``smtps://...`` (default 465)."""
    parts = urlsplit(url)
    if parts.scheme not in ("smtp", "smtps") or not parts.hostname:
        raise ValueError("SMTP URL must look like smtp://[user:pass@]host[:port] or smtps://")
    use_tls = parts.scheme == "smtps"
    return SmtpTarget(
        hostname=parts.hostname,
        port=parts.port or (465 if use_tls else 25),
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password is not None else None,
        use_tls=use_tls,
    )


def message_id(dedupe_key: str, mail_from: str) -> str:
    """A Message-ID that is the same for every (re)send of one outbox message."""
    digest = hashlib.sha256(dedupe_key.encode()).hexdigest()[:40]
    domain = mail_from.rpartition("@")[2].strip("<> ") or "payguard.invalid"
    return f"<outbox.{digest}@{domain}>"


def build_email(message: ClaimedMessage, *, mail_from: str) -> EmailMessage:
    email = EmailMessage()
    email["From"] = mail_from
    email["To"] = message.recipient
    email["Subject"] = message.subject
    email["Message-ID"] = message_id(message.dedupe_key, mail_from)
    created = message.created_at
    if created.tzinfo is None:  # SQLite hands timestamps back naive; they are UTC
        created = created.replace(tzinfo=UTC)
    # The creation time, not the send time, so a resend is byte-for-byte the same message.
    email["Date"] = format_datetime(created.astimezone(UTC))
    email["Auto-Submitted"] = "auto-generated"  # RFC 3834: autoresponders stay quiet
    email.set_content(message.body)
    return email


def _is_permanent(exc: aiosmtplib.SMTPException) -> bool:
    # Only refusals of this message/recipient are final. A 5xx to MAIL FROM or AUTH is our
    # misconfiguration: retrying after the operator fixes it must still deliver.
    if isinstance(exc, aiosmtplib.SMTPRecipientsRefused):
        return all(500 <= r.code < 600 for r in exc.recipients)
    if isinstance(exc, aiosmtplib.SMTPDataError):
        return 500 <= exc.code < 600
    return False


class SmtpTransport:
    """One SMTP session per message, bounded by ``timeout`` seconds overall."""

    name = "smtp"

    def __init__(self, url: str, *, mail_from: str, timeout: float = 15.0) -> None:
        self.target = parse_smtp_url(url)
        self.mail_from = mail_from
        self.timeout = timeout

    async def deliver(self, message: ClaimedMessage) -> None:
        t = self.target
        email = build_email(message, mail_from=self.mail_from)
        try:
            async with asyncio.timeout(self.timeout):
                await aiosmtplib.send(
                    email, sender=self.mail_from, recipients=[message.recipient],
                    hostname=t.hostname, port=t.port, username=t.username,
                    password=t.password, use_tls=t.use_tls,
                    start_tls=False if t.use_tls else None, timeout=self.timeout)
        except aiosmtplib.SMTPException as exc:
            if _is_permanent(exc):
                raise PermanentDeliveryError(str(exc)) from exc
            raise
