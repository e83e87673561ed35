"""The service with real mail: a real SMTP server on loopback (aiosmtpd), the in-process
outbox worker delivering to it, and helpers that read links out of what arrived."""

from __future__ import annotations

import re
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from app.main import create_app
from app.settings import Settings
from testkit.live_server import LiveClient, serve
from testkit.smtp_server import Received, SmtpServer, smtp_server
from tests.conftest import make_settings

LINK = re.compile(r"(https?://\S+/account/[a-z-]+)\?token=([A-Za-z0-9_-]+)")
LINK_BASE = "http://accounts.example.test"


def settings_with_mail(settings: Settings, signing_key_file: Path, smtp: SmtpServer, **groups: Any) -> Settings:
    mail = {
        "smtp_host": smtp.host,
        "smtp_port": smtp.port,
        "smtp_security": "none",
        "from_address": "Accounts <accounts@example.test>",
        "link_base_url": LINK_BASE,
        "worker_enabled": True,
        "poll_interval_seconds": 0.05,
        "retry_base_seconds": 0.05,
        "retry_max_seconds": 0.3,
        **groups.pop("mail", {}),
    }
    return make_settings(str(settings.db.url), signing_key_file, mail=mail, **groups)


@dataclass
class MailedService:
    client: LiveClient
    smtp: SmtpServer

    async def mails_to(self, address: str, count: int = 1, within: float = 20.0) -> list[Received]:
        """The mails delivered to ``address`` once there are ``count`` (fails if not in time)."""
        deadline = time.monotonic() + within
        while True:
            found = [m for m in self.smtp.received if address in m.recipients]
            if len(found) >= count or time.monotonic() > deadline:
                assert len(found) >= count, f"{len(found)} of {count} mails to {address}: {self.smtp.received}"
                return found
            await _sleep()

    async def no_more_mail_to(self, address: str, already: int, settle: float = 1.0) -> None:
        """Nothing beyond the ``already`` mails reaches ``address`` within ``settle`` seconds."""
        deadline = time.monotonic() + settle
        while time.monotonic() < deadline:
            await _sleep()
        assert len([m for m in self.smtp.received if address in m.recipients]) == already

    async def link_to(self, address: str, page: str, nth: int = 1, within: float = 20.0) -> str:
        """The token of the ``nth`` mail to ``address`` with a link to ``page``."""
        deadline = time.monotonic() + within
        while True:
            tokens = [token for mail in self.smtp.received if address in mail.recipients for token in links(mail, page)]
            if len(tokens) >= nth:
                return tokens[nth - 1]
            assert time.monotonic() < deadline, f"no link to {page} for {address}: {self.smtp.received}"
            await _sleep()


def links(mail: Received, page: str) -> list[str]:
    """The tokens of the links to ``page`` in the mail's text part."""
    found = []
    for url, token in LINK.findall(body_text(mail)):
        if url.endswith(page):
            assert url.startswith(LINK_BASE), url
            found.append(str(token))
    return found


def body_text(mail: Received) -> str:
    part = mail.message.get_body(preferencelist=("plain",))
    assert part is not None
    return str(part.get_content())


def body_html(mail: Received) -> str:
    part = mail.message.get_body(preferencelist=("html",))
    assert part is not None
    return str(part.get_content())


async def _sleep() -> None:
    import anyio

    await anyio.sleep(0.05)


@pytest.fixture
def smtp() -> Iterator[SmtpServer]:
    with smtp_server() as server:
        yield server


@asynccontextmanager
async def mailed_service(settings: Settings) -> AsyncIterator[LiveClient]:
    async with serve(create_app(settings)) as client:
        yield client
