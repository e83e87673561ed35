"""A real SMTP server on loopback (aiosmtpd, in a thread of its own) that keeps what it
receives and can be told to refuse mail for a while, as a relay under load does."""

from __future__ import annotations

import asyncio
import email
import email.policy
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from email.message import EmailMessage
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from testkit.ports import free_port
from testkit.tls import LoopbackCertificate


@dataclass(frozen=True)
class Received:
    sender: str
    recipients: list[str]
    message: EmailMessage

    @property
    def message_id(self) -> str:
        return str(self.message["Message-ID"])


class _Recorder:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.received: list[Received] = []
        self.refusals = 0
        self.refuse_until = 0.0
        self.refusal_reply = "451 4.3.0 Try again later"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802 - aiosmtpd's hook name
        with self.lock:
            if time.monotonic() < self.refuse_until:
                self.refusals += 1
                return self.refusal_reply
            message = email.message_from_bytes(envelope.content, policy=email.policy.default)
            assert isinstance(message, EmailMessage)
            self.received.append(Received(envelope.mail_from, list(envelope.rcpt_tos), message))
        return "250 2.0.0 OK"


class SmtpServer:
    """``security``: "none" (plain), "starttls" (STARTTLS required before MAIL) or "tls"
    (implicit TLS), the latter two with ``certificate``. With ``credentials`` (username,
    password) AUTH is required, and offered only over TLS."""

    def __init__(
        self,
        *,
        security: str = "none",
        certificate: LoopbackCertificate | None = None,
        credentials: tuple[str, str] | None = None,
    ) -> None:
        self.port = free_port()
        self.host = "127.0.0.1"
        self.security = security
        self.credentials = credentials
        self.certificate = certificate
        self._recorder = _Recorder()
        # As Postfix and every large provider do: internationalised addresses (RFC 6531).
        options: dict[str, Any] = {"enable_SMTPUTF8": True}
        if security != "none":
            assert certificate is not None, "TLS needs a certificate"
            context = certificate.server_context()
            options.update(
                {"ssl_context": context} if security == "tls" else {"tls_context": context, "require_starttls": True}
            )
        if credentials is not None:
            # aiosmtpd counts only STARTTLS as TLS for auth_require_tls; under implicit TLS the
            # whole connection is encrypted, so AUTH needs no further condition there.
            options.update(
                {"authenticator": self._authenticate, "auth_required": True, "auth_require_tls": security != "tls"}
            )
        self._controller = Controller(self._recorder, hostname=self.host, port=self.port, **options)

    def _authenticate(self, server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any) -> AuthResult:
        if (
            self.credentials is not None
            and isinstance(auth_data, LoginPassword)
            and (auth_data.login.decode(), auth_data.password.decode()) == self.credentials
        ):
            return AuthResult(success=True)
        return AuthResult(success=False, handled=False)

    @property
    def received(self) -> list[Received]:
        with self._recorder.lock:
            return list(self._recorder.received)

    @property
    def refusals(self) -> int:
        with self._recorder.lock:
            return self._recorder.refusals

    def refuse_for(self, seconds: float, reply: str = "451 4.3.0 Try again later") -> None:
        """Answer DATA with ``reply`` (a 4xx: try later; a 5xx: never) for ``seconds``."""
        with self._recorder.lock:
            self._recorder.refuse_until = time.monotonic() + seconds
            self._recorder.refusal_reply = reply

    def accept(self) -> None:
        self.refuse_for(0)

    def wait_for(self, count: int, timeout: float = 20.0) -> list[Received]:
        """The mails received once there are at least ``count`` (or what came by the timeout)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and len(self.received) < count:
            time.sleep(0.05)
        return self.received

    async def received_at_least(self, count: int, within: float = 20.0) -> list[Received]:
        """``wait_for`` for a test whose event loop also runs the sender."""
        deadline = time.monotonic() + within
        # Polled: the mails arrive on the server's own thread and event loop.
        while time.monotonic() < deadline and len(self.received) < count:  # noqa: ASYNC110
            await asyncio.sleep(0.05)
        return self.received

    def start(self) -> SmtpServer:
        self._controller.start()
        return self

    def stop(self) -> None:
        self._controller.stop()

    def env(self) -> dict[str, str]:
        """The service's settings that send to this server."""
        env = {
            "USER_SERVICE_MAIL__SMTP_HOST": self.host,
            "USER_SERVICE_MAIL__SMTP_PORT": str(self.port),
            "USER_SERVICE_MAIL__SMTP_SECURITY": self.security,
        }
        if self.certificate is not None:
            env["USER_SERVICE_MAIL__SMTP_CA_FILE"] = str(self.certificate.ca_file)
        if self.credentials is not None:
            env["USER_SERVICE_MAIL__SMTP_USERNAME"], env["USER_SERVICE_MAIL__SMTP_PASSWORD"] = self.credentials
        return env


@contextmanager
def smtp_server(**options: Any) -> Iterator[SmtpServer]:
    server = SmtpServer(**options).start()
    try:
        yield server
    finally:
        server.stop()
