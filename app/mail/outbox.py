"""Writing mail into the outbox, in the caller's transaction."""

from __future__ import annotations

from dataclasses import dataclass
from email.headerregistry import Address
from email.utils import parseaddr
from typing import TYPE_CHECKING

from uuid_utils.compat import uuid7

from app.db.models import OutboxMessage, utcnow
from app.observability.mail import current_traceparent

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession

    from app.settings import MailSettings

MAX_KIND_LENGTH = 32


@dataclass(frozen=True, slots=True)
class OutgoingMail:
    """One mail to one person. ``kind`` names what it is for (``verify_email``,
    ``password_reset``): a short fixed label, used in logs and metrics, never the recipient."""

    kind: str
    recipient: str
    subject: str
    text_body: str
    html_body: str | None = None

    def __post_init__(self) -> None:
        if not self.kind or len(self.kind) > MAX_KIND_LENGTH:
            raise ValueError(f"kind must be 1 to {MAX_KIND_LENGTH} characters")
        # Header injection: a newline in a header value would start a header of its own.
        if any(c in value for value in (self.recipient, self.subject) for c in "\r\n"):
            raise ValueError("recipient and subject must be single lines")
        # Exactly one bare address ("a@b", not "A <a@b>" or "a@b, c@d"): one mail, one
        # person. Internationalised addresses (jürgen@…, RFC 6531) are addresses too:
        # registration accepts them, so their mail must be sendable.
        # The standard library's parser knows only ASCII local parts, so the structure is
        # checked with every other character standing in for one.
        ascii_shape = "".join(c if c.isascii() else "x" for c in self.recipient)
        try:
            Address(addr_spec=ascii_shape)
        except (ValueError, IndexError) as exc:
            raise ValueError("recipient must be one email address") from exc


def message_id_domain(settings: MailSettings) -> str:
    """The right-hand side of our Message-IDs: the sender's domain, as RFC 5322 suggests."""
    _, address = parseaddr(settings.from_address)
    try:
        domain = Address(addr_spec=address).domain
    except (ValueError, IndexError):
        domain = ""
    return domain or "user-service.invalid"


async def enqueue(session: AsyncSession, mail: OutgoingMail, settings: MailSettings) -> OutboxMessage:
    """Add ``mail`` to the outbox in ``session``'s transaction, uncommitted: it is sent if
    and only if the caller commits, together with the change the mail is about.

    The Message-ID is fixed now, from the row's id, so every attempt to send this row
    carries the same one (a receiver or a person can tell a repeat from a new mail)."""
    outbox_id = uuid7()
    row = OutboxMessage(
        id=outbox_id,
        message_id=f"<{outbox_id}@{message_id_domain(settings)}>",
        kind=mail.kind,
        recipient=mail.recipient,
        subject=mail.subject,
        text_body=mail.text_body,
        html_body=mail.html_body,
        attempts=0,
        next_attempt_at=utcnow(),
        traceparent=current_traceparent(),
    )
    session.add(row)
    # Flushed now so that a broken row fails the caller's use case, not the worker later.
    await session.flush()
    return row
