"""How a mail leaves: SMTP (aiosmtplib) or, without an SMTP host, a file per mail."""

from __future__ import annotations

import asyncio
import hashlib
import os
from email import policy
from email.message import EmailMessage
from email.utils import format_datetime, parseaddr
from pathlib import Path
from typing import Protocol

import aiosmtplib

from app.db.models import OutboxMessage
from app.observability.logging import get_logger
from app.settings import MailSettings, SmtpSecurity

MAX_ERROR_LENGTH = 500

_log = get_logger("user_service.mail")


class DeliveryError(Exception):
    """An attempt failed. ``permanent``: the server refused this mail for good (a 5xx to
    the recipient or the data), so retrying cannot help; anything else is retried."""

    def __init__(self, reason: str, *, permanent: bool) -> None:
        super().__init__(reason)
        self.reason = reason[:MAX_ERROR_LENGTH]
        self.permanent = permanent


def build_email(row: OutboxMessage, from_address: str) -> EmailMessage:
    """The mail of an outbox row, identical on every attempt: Message-ID and Date come
    from the row, not from the moment of sending."""
    # An internationalised recipient (jürgen@…) is written as UTF-8 (RFC 6532), and
    # aiosmtplib then asks for SMTPUTF8; the default policy would mangle its local part
    # into an encoded word that no server delivers.
    email = EmailMessage(policy=policy.default if row.recipient.isascii() else policy.SMTPUTF8)
    email["From"] = from_address
    email["To"] = row.recipient
    email["Subject"] = row.subject
    email["Date"] = format_datetime(row.created_at)
    email["Message-ID"] = row.message_id
    # A mail a person gets unasked (a reset they did not request) should not trigger
    # vacation replies back to a no-reply address (RFC 3834).
    email["Auto-Submitted"] = "auto-generated"
    email.set_content(row.text_body)
    if row.html_body is not None:
        email.add_alternative(row.html_body, subtype="html")
        # The default boundary is random; from the Message-ID, a retry is byte for byte
        # the first attempt ("=_" cannot occur in base64 or quoted-printable text).
        email.set_boundary("=_" + hashlib.sha256(row.message_id.encode()).hexdigest()[:40])
    return email


def email_of(row: OutboxMessage, from_address: str) -> EmailMessage:
    """build_email, with a row that cannot become a mail (a header that does not parse)
    refused for good: retrying it would fail the same way every time."""
    try:
        return build_email(row, from_address)
    except (ValueError, TypeError) as exc:
        raise DeliveryError(f"not a valid mail: {type(exc).__name__}", permanent=True) from exc


class Transport(Protocol):
    async def send(self, row: OutboxMessage) -> str | None:
        """Deliver the row's mail or raise DeliveryError; returns where it went when that
        is worth logging (the file transport's path)."""


class SmtpTransport:
    def __init__(self, settings: MailSettings) -> None:
        if settings.smtp_host is None:
            raise ValueError("SmtpTransport needs USER_SERVICE_MAIL__SMTP_HOST (build_transport checks it)")
        self._settings = settings
        self._host = settings.smtp_host

    async def send(self, row: OutboxMessage) -> str | None:
        settings = self._settings
        password = settings.smtp_password.get_secret_value() if settings.smtp_password else None
        email = email_of(row, settings.from_address)
        try:
            await aiosmtplib.send(
                email,
                # The envelope is explicit, never read back from the headers: the one
                # recipient of the row, whatever a header might say.
                sender=parseaddr(settings.from_address)[1],
                recipients=[row.recipient],
                hostname=self._host,
                port=settings.smtp_port,
                username=settings.smtp_username,
                password=password if settings.smtp_username else None,
                use_tls=settings.smtp_security is SmtpSecurity.TLS,
                # False, not None: None would upgrade whenever the server offers it, and
                # "none" means plain (a catcher on loopback with a certificate nobody trusts).
                start_tls=settings.smtp_security is SmtpSecurity.STARTTLS,
                timeout=settings.smtp_timeout_seconds,
                cert_bundle=str(settings.smtp_ca_file) if settings.smtp_ca_file else None,
            )
        except aiosmtplib.SMTPException as exc:
            raise DeliveryError(_describe(exc, password), permanent=_is_permanent(exc)) from exc
        except OSError as exc:  # refused connection, DNS failure, TLS handshake
            raise DeliveryError(_describe(exc, password), permanent=False) from exc
        return None


def _is_permanent(exc: aiosmtplib.SMTPException) -> bool:
    """5xx about this mail (its sender, recipient or content). A 5xx to AUTH or HELO is a
    configuration problem of ours: retried, so that fixing it delivers what waited."""
    if isinstance(exc, aiosmtplib.SMTPRecipientsRefused):
        return all(refusal.code >= 500 for refusal in exc.recipients)
    permanent_kinds = (aiosmtplib.SMTPRecipientRefused, aiosmtplib.SMTPSenderRefused, aiosmtplib.SMTPDataError)
    return isinstance(exc, permanent_kinds) and exc.code >= 500


def _describe(exc: BaseException, password: str | None) -> str:
    """The error class and the server's reply, short, with the password struck out in case
    some library ever echoes it."""
    if isinstance(exc, aiosmtplib.SMTPRecipientsRefused):
        text = "; ".join(f"{r.code} {r.message}" for r in exc.recipients)
    elif isinstance(exc, aiosmtplib.SMTPResponseException):
        text = f"{exc.code} {exc.message}"
    else:
        text = str(exc)
    described = f"{type(exc).__name__}: {text}".replace("\r", " ").replace("\n", " ")
    if password:
        described = described.replace(password, "***")
    return described[:MAX_ERROR_LENGTH]


class FileTransport:
    """Development: each mail as ``<outbox id>.eml`` in a directory. A second attempt for
    the same row overwrites its file, so a retry never shows as a second mail."""

    def __init__(self, directory: Path, from_address: str) -> None:
        self.directory = directory
        self._from_address = from_address

    async def send(self, row: OutboxMessage) -> str | None:
        data = bytes(email_of(row, self._from_address))
        try:
            return await asyncio.to_thread(self._write, f"{row.id}.eml", data)
        except OSError as exc:
            raise DeliveryError(_describe(exc, None), permanent=False) from exc

    def _write(self, name: str, data: bytes) -> str:
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self.directory / name
        partial = path.with_suffix(".eml.partial")
        partial.write_bytes(data)
        # A reader of the directory sees whole mails only.
        os.replace(partial, path)
        return str(path)


def build_transport(settings: MailSettings) -> SmtpTransport | FileTransport:
    if settings.uses_smtp:
        return SmtpTransport(settings)
    return FileTransport(settings.file_directory, settings.from_address)


def warn_if_mail_reaches_nobody(mail: MailSettings) -> None:
    """For a production process that delivers mail: without an SMTP host every mail is
    written to a file on the process's own disk (a read-only root or an emptyDir in a
    container), so the service runs, registrations succeed, and no person ever receives a
    verification or reset mail. Not refused at start (a deployment may not send mail yet),
    but said once, naming the setting to fix."""
    if not mail.uses_smtp:
        _log.warning(
            "mail_not_delivered",
            setting="USER_SERVICE_MAIL__SMTP_HOST",
            problem="unset: every mail is written as a file on this machine and reaches nobody",
            directory=str(mail.file_directory),
        )
