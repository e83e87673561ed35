"""Delivery by the real service process: mail left in the outbox when the service stopped
is delivered by the next start, once; and the embedded default writes .eml files."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable, Iterator
from email import message_from_bytes, policy
from pathlib import Path

import pytest
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, create_async_engine

from app.db.migrate import upgrade_to_head
from app.db.models import OutboxMessage
from app.mail.outbox import OutgoingMail, enqueue
from app.mail.transports import FileTransport, build_transport
from app.mail.worker import OutboxWorker
from app.observability.mail import MailTelemetry
from app.settings import MailSettings
from testkit.server_process import CLEAN_EXIT, ServerProcess
from testkit.smtp_server import SmtpServer, smtp_server

pytestmark = pytest.mark.slow


@pytest.fixture
def smtp() -> Iterator[SmtpServer]:
    with smtp_server() as server:
        yield server


def a_mail(number: int) -> OutgoingMail:
    return OutgoingMail(
        kind="test_mail",
        recipient=f"person{number}@example.test",
        subject=f"Mail {number}",
        text_body=f"Mail {number}\n",
    )


async def enqueue_committed(engine: AsyncEngine, settings: MailSettings, count: int) -> list[OutboxMessage]:
    async with AsyncSession(engine, expire_on_commit=False) as session, session.begin():
        return [await enqueue(session, a_mail(n), settings) for n in range(count)]


async def outbox(engine: AsyncEngine) -> list[OutboxMessage]:
    async with AsyncSession(engine) as session:
        return list((await session.execute(select(OutboxMessage))).scalars())


async def test_mail_left_undelivered_at_shutdown_is_delivered_once_after_the_restart(
    db_engine: AsyncEngine, smtp: SmtpServer, server_process: Callable[..., ServerProcess]
) -> None:
    env = {
        **smtp.env(),
        "USER_SERVICE_MAIL__POLL_INTERVAL_SECONDS": "0.1",
        "USER_SERVICE_MAIL__RETRY_BASE_SECONDS": "0.1",
        "USER_SERVICE_MAIL__RETRY_MAX_SECONDS": "0.5",
    }
    smtp.refuse_for(3600)
    first = server_process(**env).start()
    try:
        queued = await enqueue_committed(db_engine, MailSettings(), 5)
        # The running service tries them all and fails: the server refuses.
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if all(row.attempts > 0 for row in await outbox(db_engine)):
                break
            await asyncio.sleep(0.1)
    finally:
        assert first.stop() in CLEAN_EXIT
    assert smtp.received == []
    assert all(row.attempts > 0 and row.sent_at is None for row in await outbox(db_engine)), first.output

    smtp.accept()
    second = server_process(**env).start()
    try:
        await smtp.received_at_least(5, within=20)
        await asyncio.sleep(0.5)  # a duplicate would show up by now
    finally:
        assert second.stop() in CLEAN_EXIT
    assert Counter(mail.message_id for mail in smtp.received) == Counter(row.message_id for row in queued)
    assert all(row.sent_at is not None for row in await outbox(db_engine))
    assert '"event":"mail_sent"' in second.output


async def test_the_embedded_default_writes_each_mail_as_an_eml_file_once(tmp_path: Path) -> None:
    default = build_transport(MailSettings())
    assert isinstance(default, FileTransport)
    assert default.directory == Path(".data/mail")

    engine = create_async_engine(f"sqlite+aiosqlite:///{tmp_path / 'embedded.sqlite3'}")
    try:
        # Migration 0005 on SQLite, as the embedded default runs it at start-up.
        await upgrade_to_head(engine)
        settings = MailSettings(file_directory=tmp_path / "mail", from_address="no-reply@example.test")
        [row] = await enqueue_committed(engine, settings, 1)
        worker = OutboxWorker(engine, build_transport(settings), settings, MailTelemetry(None, None))

        assert await worker.deliver_due() == 1
        assert await worker.deliver_due() == 0
        [stored] = await outbox(engine)
    finally:
        await engine.dispose()

    [written] = sorted((tmp_path / "mail").iterdir())
    assert written.name == f"{row.id}.eml"
    mail = message_from_bytes(written.read_bytes(), policy=policy.default)
    assert mail["Message-ID"] == row.message_id
    assert mail["To"] == "person0@example.test"
    assert stored.sent_at is not None


class RecordingFileTransport(FileTransport):
    """The file transport, counting its sends, and writing through another connection
    while each mail is "on the wire": a lock the worker held during the send would make
    that write fail (SQLite: database is locked)."""

    def __init__(self, directory: Path, writer: AsyncEngine | None = None) -> None:
        super().__init__(directory, "no-reply@example.test")
        self.sent: list[str] = []
        self._writer = writer

    async def send(self, row: OutboxMessage) -> str | None:
        if self._writer is not None:
            async with self._writer.begin() as conn:
                # Rewrites every row (same values): a commit that changes pages needs the
                # exclusive lock, which any reader's open transaction would deny.
                await conn.execute(text("UPDATE outbox_messages SET kind = kind"))
        where = await super().send(row)
        self.sent.append(row.message_id)
        return where


async def test_on_sqlite_one_worker_delivers_and_holds_no_database_lock_while_sending(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'embedded.sqlite3'}"
    # Two processes' worth of delivery workers (uvicorn with two worker processes), each
    # with its own engine, and a third connection writing during every send, with a short
    # busy timeout so that a held lock fails the test instead of waiting it out.
    engines = [create_async_engine(url) for _ in range(2)]
    writer = create_async_engine(url, connect_args={"timeout": 0.5})
    try:
        await upgrade_to_head(engines[0])
        settings = MailSettings(file_directory=tmp_path / "mail", poll_interval_seconds=0.05)
        queued = await enqueue_committed(engines[0], settings, 20)
        transports = [RecordingFileTransport(tmp_path / "mail", writer) for _ in engines]
        workers = [
            OutboxWorker(engine, transport, settings, MailTelemetry(None, None))
            for engine, transport in zip(engines, transports, strict=True)
        ]
        stop = asyncio.Event()
        tasks = [asyncio.create_task(worker.run(stop)) for worker in workers]
        for _ in range(400):
            if all(row.sent_at for row in await outbox(engines[0])):
                break
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.3)
        stop.set()
        await asyncio.wait_for(asyncio.gather(*tasks), 10)
        stored = await outbox(engines[0])
    finally:
        for engine in [*engines, writer]:
            await engine.dispose()

    assert all(row.sent_at is not None and row.last_error is None for row in stored)
    sent = [message_id for transport in transports for message_id in transport.sent]
    assert Counter(sent) == Counter(row.message_id for row in queued)
    # One of them held the database's delivery lock; the other never sent anything.
    assert sorted(len(transport.sent) for transport in transports) == [0, 20]
