"""``litestar mail deliver``: the outbox worker as processes of their own (a separate
deployment), two of them on one PostgreSQL, each mail delivered once; SIGTERM stops them
cleanly; the embedded SQLite database is refused (the service process delivers it)."""

from __future__ import annotations

import asyncio
import base64
import os
import secrets
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from app.mail.outbox import OutgoingMail, enqueue
from app.settings import MailSettings, Settings
from testkit.ports import free_port
from testkit.server_process import LITESTAR_CLI
from testkit.smtp_server import SmtpServer, smtp_server
from tests.conftest import ROOT

pytestmark = pytest.mark.slow


@pytest.fixture
def smtp() -> Iterator[SmtpServer]:
    with smtp_server() as server:
        yield server


def cli_env(database_url: str, signing_key_file: Path, smtp: SmtpServer) -> dict[str, str]:
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith(("USER_SERVICE_", "OTEL_", "PROMETHEUS_"))},
        "USER_SERVICE_ENVIRONMENT": "test",
        "USER_SERVICE_DB__URL": database_url,
        "USER_SERVICE_TOKENS__SIGNING_KEY_FILE": str(signing_key_file),
        "USER_SERVICE_LOGGING__FORMAT": "json",
        "USER_SERVICE_MAIL__POLL_INTERVAL_SECONDS": "0.05",
        **smtp.env(),
    }


def start_deliverer(env: dict[str, str], log: Path, *args: str) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(
            [*LITESTAR_CLI, "mail", "deliver", *args], cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT
        )


def wait_for_text(log: Path, text: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while text not in log.read_text(errors="replace"):
        assert time.monotonic() < deadline, log.read_text(errors="replace")
        time.sleep(0.1)


async def test_two_deliverer_processes_send_each_mail_once_and_stop_on_sigterm(
    settings: Settings, signing_key_file: Path, db_engine: AsyncEngine, smtp: SmtpServer, tmp_path: Path
) -> None:
    env = cli_env(settings.db.url, signing_key_file, smtp)
    metrics_port = free_port()
    logs = [tmp_path / "first.log", tmp_path / "second.log"]
    processes = [
        start_deliverer(env, logs[0], "--metrics-port", str(metrics_port)),
        start_deliverer(env, logs[1]),
    ]
    try:
        for log in logs:
            wait_for_text(log, "delivering the mail outbox")
        mail = MailSettings(from_address="no-reply@example.test")
        async with AsyncSession(db_engine, expire_on_commit=False) as session, session.begin():
            queued = [
                await enqueue(
                    session, OutgoingMail("test_mail", f"p{n}@example.test", f"Mail {n}", f"Body {n}\n"), mail
                )
                for n in range(40)
            ]
        await smtp.received_at_least(40, within=30)
        await asyncio.sleep(0.5)  # a duplicate would have arrived by now
        async with httpx.AsyncClient() as http:
            exposition = (await http.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5)).text
    finally:
        for process in processes:
            process.send_signal(signal.SIGTERM)
        codes = [process.wait(timeout=30) for process in processes]

    assert Counter(m.message_id for m in smtp.received) == Counter(row.message_id for row in queued)
    assert codes == [0, 0], [log.read_text() for log in logs]
    assert "user_service_mail_outbox_depth 0.0" in exposition
    sent = [log.read_text().count('"event":"mail_sent"') for log in logs]
    assert sum(sent) == 40, sent


def test_the_embedded_database_is_refused(signing_key_file: Path, smtp: SmtpServer, tmp_path: Path) -> None:
    env = cli_env(f"sqlite+aiosqlite:///{tmp_path / 'db.sqlite3'}", signing_key_file, smtp)
    result = subprocess.run(
        [*LITESTAR_CLI, "mail", "deliver"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 1
    assert "delivered by the service process itself" in result.stderr


@pytest.mark.parametrize("with_host", [False, True])
def test_a_production_deliverer_without_an_smtp_host_says_mail_reaches_nobody(
    settings: Settings, signing_key_file: Path, smtp: SmtpServer, tmp_path: Path, with_host: bool
) -> None:
    """The warning the service process gives at start (tests/integration/test_production_start.py),
    from the process that delivers in its place (USER_SERVICE_MAIL__WORKER_ENABLED=false)."""
    env = {
        **cli_env(settings.db.url, signing_key_file, smtp),
        "USER_SERVICE_ENVIRONMENT": "production",
        "USER_SERVICE_MFA__ENCRYPTION_KEY": base64.b64encode(secrets.token_bytes(32)).decode(),
        "USER_SERVICE_MAIL__WORKER_ENABLED": "false",
        # The smallest argon2id pair OWASP lists; production refuses anything weaker.
        "USER_SERVICE_PASSWORDS__TIME_COST": "2",
        "USER_SERVICE_PASSWORDS__MEMORY_COST_KIB": "19456",
    }
    if not with_host:
        del env["USER_SERVICE_MAIL__SMTP_HOST"]
    log = tmp_path / "deliverer.log"
    process = start_deliverer(env, log)
    try:
        wait_for_text(log, "delivering the mail outbox")
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0, log.read_text()
    warnings = log.read_text().count('"event":"mail_not_delivered"')
    assert warnings == (0 if with_host else 1), log.read_text()
