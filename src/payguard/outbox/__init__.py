"""The transactional outbox: emails written with the business change, delivered after it.

    async def fulfil(uow: UnitOfWork) -> None:   # run by ``await db.transaction(fulfil)``
        ...fulfil the purchase...
        subject, body = confirmation_email(purchase, user_email=..., user_name=...)
        await enqueue(uow.conn, dedupe_key=f"purchase-confirmation:{purchase['id']}", ...)
        uow.after_commit(dispatcher.wake)       # deliver right after the commit

One email per dedupe key is a UNIQUE constraint; delivery (SMTP or the local mailbox) is
done by ``OutboxDispatcher`` outside any transaction, with leases, retries and backoff.
"""

from payguard.outbox.dispatcher import OutboxDispatcher
from payguard.outbox.email import confirmation_email, format_money
from payguard.outbox.queue import count_pending, enqueue, list_mailbox
from payguard.outbox.transport import (
    MailboxTransport,
    PermanentDeliveryError,
    SmtpTransport,
    Transport,
    message_id,
)
from payguard.outbox.types import ClaimedMessage, PassResult

__all__ = [
    "ClaimedMessage",
    "MailboxTransport",
    "OutboxDispatcher",
    "PassResult",
    "PermanentDeliveryError",
    "SmtpTransport",
    "Transport",
    "confirmation_email",
    "count_pending",
    "enqueue",
    "format_money",
    "list_mailbox",
    "message_id",
]
