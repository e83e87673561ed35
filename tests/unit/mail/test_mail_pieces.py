"""The pure pieces of the outbox: the mail a row becomes, the retry schedule, the error text
kept in the row, and the input checks of an outgoing mail."""

from __future__ import annotations

import datetime as dt
import random
from email import message_from_bytes, policy

import aiosmtplib
import pytest

from app.db.models import OutboxMessage
from app.mail.outbox import OutgoingMail, message_id_domain
from app.mail.transports import MAX_ERROR_LENGTH, _describe, _is_permanent, build_email
from app.mail.worker import retry_delay
from app.settings import MailSettings


def a_row(html: str | None = None) -> OutboxMessage:
    return OutboxMessage(
        kind="test",
        recipient="anne@example.test",
        subject="Ünïcode subject",
        text_body="Plain text\n",
        html_body=html,
        message_id="<fixed@example.test>",
        created_at=dt.datetime(2026, 12, 4, 12, 0, tzinfo=dt.UTC),
    )


def test_a_row_becomes_the_same_mail_on_every_attempt() -> None:
    row = a_row("<p>HTML</p>")
    first, second = bytes(build_email(row, "no-reply@example.test")), bytes(build_email(row, "no-reply@example.test"))
    assert first == second
    mail = message_from_bytes(first, policy=policy.default)
    assert mail["Message-ID"] == "<fixed@example.test>"
    assert mail["Date"] == "Fri, 04 Dec 2026 12:00:00 +0000"
    assert mail["Subject"] == "Ünïcode subject"
    assert mail.get_content_type() == "multipart/alternative"


def test_a_text_only_mail_has_no_html_part() -> None:
    mail = build_email(a_row(), "no-reply@example.test")
    assert mail.get_content_type() == "text/plain"


def test_retries_back_off_exponentially_with_full_jitter() -> None:
    settings = MailSettings(retry_base_seconds=2, retry_max_seconds=60)
    rng = random.Random(7)  # noqa: S311 - jitter in a test
    for failures, bound in ((1, 2), (2, 4), (3, 8), (6, 60), (1000, 60)):
        delays = [retry_delay(settings, failures, rng) for _ in range(200)]
        assert all(0 <= delay <= bound for delay in delays)
        # Spread over the whole range, not bunched at the bound.
        assert min(delays) < bound * 0.1
        assert max(delays) > bound * 0.9


def test_the_stored_error_is_short_single_line_and_without_the_password() -> None:
    exc = aiosmtplib.SMTPAuthenticationError(535, "bad credentials for hunter2\r\nsecond line" + "x" * 900)
    described = _describe(exc, "hunter2")
    assert "hunter2" not in described
    assert "\n" not in described
    assert "\r" not in described
    assert described.startswith("SMTPAuthenticationError: 535 bad credentials for ***")
    assert len(described) == MAX_ERROR_LENGTH


def test_only_a_5xx_about_the_mail_is_permanent() -> None:
    assert _is_permanent(aiosmtplib.SMTPDataError(554, "rejected"))
    assert _is_permanent(aiosmtplib.SMTPRecipientsRefused([aiosmtplib.SMTPRecipientRefused(550, "no", "a@b")]))
    assert not _is_permanent(aiosmtplib.SMTPDataError(451, "later"))
    # Our credentials or our greeting refused: fixing the configuration delivers the mail.
    assert not _is_permanent(aiosmtplib.SMTPAuthenticationError(535, "bad credentials"))
    assert not _is_permanent(aiosmtplib.SMTPServerDisconnected("gone"))


def test_message_ids_use_the_senders_domain() -> None:
    assert message_id_domain(MailSettings(from_address="Service <no-reply@example.com>")) == "example.com"
    assert message_id_domain(MailSettings(from_address="nonsense")) == "user-service.invalid"


@pytest.mark.parametrize(
    "changes",
    [
        {"subject": "one\r\nBcc: everyone@example.test"},
        {"recipient": "a@example.test\nBcc: b@example.test"},
        {"kind": ""},
        {"recipient": "a@example.test, b@example.test"},
        {"recipient": "Anne <a@example.test>"},
        {"recipient": "nonsense"},
    ],
)
def test_an_outgoing_mail_refuses_header_injection_and_a_missing_kind(changes: dict[str, str]) -> None:
    fields = {"kind": "test", "recipient": "a@example.test", "subject": "Hi", "text_body": "x", **changes}
    with pytest.raises(ValueError, match=r"single lines|kind|one email address"):
        OutgoingMail(**fields)
