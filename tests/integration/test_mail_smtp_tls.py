"""SMTP over TLS with AUTH, against a real server on loopback whose certificate a test CA
signed: STARTTLS and implicit TLS deliver with the right credentials; wrong credentials are
a failure that is retried (fixing the setting delivers what waited), recorded without the
password; and the certificate is verified (a server the CA file does not vouch for fails)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import SecretStr
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from app.db.models import OutboxMessage
from app.mail.outbox import OutgoingMail, enqueue
from app.mail.transports import SmtpTransport
from app.mail.worker import OutboxWorker
from app.observability.mail import MailTelemetry
from app.settings import MailSettings
from testkit.smtp_server import SmtpServer, smtp_server
from testkit.tls import LoopbackCertificate, loopback_certificate

CREDENTIALS = ("mailer", "correct-horse-battery")
# aiosmtpd warns about AUTH without STARTTLS; under implicit TLS the connection is encrypted.
pytestmark = pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS:UserWarning")


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> LoopbackCertificate:
    return loopback_certificate(tmp_path_factory.mktemp("tls"))


@pytest.fixture(params=["starttls", "tls"])
def tls_smtp(request: pytest.FixtureRequest, certificate: LoopbackCertificate) -> Iterator[SmtpServer]:
    with smtp_server(security=request.param, certificate=certificate, credentials=CREDENTIALS) as server:
        yield server


def settings_for(smtp: SmtpServer, **overrides: object) -> MailSettings:
    env = smtp.env()
    values: dict[str, object] = {
        "smtp_host": smtp.host,
        "smtp_port": smtp.port,
        "smtp_security": smtp.security,
        "smtp_ca_file": env.get("USER_SERVICE_MAIL__SMTP_CA_FILE"),
        "smtp_username": CREDENTIALS[0],
        "smtp_password": SecretStr(CREDENTIALS[1]),
        "from_address": "no-reply@example.test",
        "smtp_timeout_seconds": 5,
        **overrides,
    }
    return MailSettings.model_validate(values)


async def deliver_one(engine: AsyncEngine, settings: MailSettings) -> OutboxMessage:
    async with AsyncSession(engine, expire_on_commit=False) as session, session.begin():
        await enqueue(session, OutgoingMail("test_mail", "anne@example.test", "Hello", "Hello\n"), settings)
    worker = OutboxWorker(engine, SmtpTransport(settings), settings, MailTelemetry(None, None))
    assert await worker.deliver_due() == 1
    async with AsyncSession(engine) as session:
        return (await session.execute(select(OutboxMessage))).scalar_one()


async def test_tls_with_auth_delivers(db_engine: AsyncEngine, tls_smtp: SmtpServer) -> None:
    row = await deliver_one(db_engine, settings_for(tls_smtp))
    assert row.sent_at is not None
    assert [mail.message_id for mail in tls_smtp.received] == [row.message_id]


async def test_a_wrong_password_is_retried_and_never_recorded(db_engine: AsyncEngine, tls_smtp: SmtpServer) -> None:
    row = await deliver_one(db_engine, settings_for(tls_smtp, smtp_password=SecretStr("wrong-password-123")))
    assert tls_smtp.received == []
    assert row.sent_at is None
    # Our configuration's fault, not the mail's: it waits for the fix instead of being dropped.
    assert row.gave_up_at is None
    assert row.last_error is not None
    assert row.last_error.startswith("SMTPAuthenticationError: 535")
    assert "wrong-password-123" not in row.last_error


async def test_a_certificate_the_ca_file_does_not_vouch_for_is_refused(
    db_engine: AsyncEngine, tls_smtp: SmtpServer, tmp_path: Path
) -> None:
    stranger = loopback_certificate(tmp_path / "other-ca")
    row = await deliver_one(db_engine, settings_for(tls_smtp, smtp_ca_file=stranger.ca_file))
    assert tls_smtp.received == []
    assert row.sent_at is None
    assert row.gave_up_at is None
    assert row.last_error is not None
    assert "certificate" in row.last_error.lower()
