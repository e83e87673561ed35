"""The mail outbox against a real SMTP server on loopback (aiosmtpd) and the real
PostgreSQL: what a committed transaction enqueues arrives once, what a rolled-back one
enqueues never leaves, refusals are retried until the server recovers, two workers never
send one mail twice, and a mail too old to be useful is given up with its reason."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
from collections import Counter
from collections.abc import AsyncIterator, Iterator

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, create_async_engine
from uuid_utils.compat import uuid7

from app.db.models import OutboxMessage
from app.mail.outbox import OutgoingMail, enqueue
from app.mail.transports import SmtpTransport
from app.mail.worker import OutboxWorker
from app.observability.mail import MailTelemetry
from app.observability.metrics import Metrics
from app.observability.tracing import Tracing
from app.settings import MailSettings
from testkit.smtp_server import SmtpServer, smtp_server


@pytest.fixture
def smtp() -> Iterator[SmtpServer]:
    with smtp_server() as server:
        yield server


def mail_settings(smtp: SmtpServer, **overrides: object) -> MailSettings:
    values: dict[str, object] = {
        "smtp_host": smtp.host,
        "smtp_port": smtp.port,
        "smtp_security": "none",
        "from_address": "User Service <no-reply@example.test>",
        "smtp_timeout_seconds": 5,
        "poll_interval_seconds": 0.05,
        "retry_base_seconds": 0.05,
        "retry_max_seconds": 0.3,
        **overrides,
    }
    return MailSettings.model_validate(values)


def worker_for(engine: AsyncEngine, settings: MailSettings, telemetry: MailTelemetry | None = None) -> OutboxWorker:
    return OutboxWorker(engine, SmtpTransport(settings), settings, telemetry or MailTelemetry(None, None))


def a_mail(number: int = 1, *, html: bool = False) -> OutgoingMail:
    return OutgoingMail(
        kind="test_mail",
        recipient=f"person{number}@example.test",
        subject=f"Mail number {number}",
        text_body=f"Hello, this is mail {number}.\n",
        html_body=f"<p>Hello, this is mail <b>{number}</b>.</p>" if html else None,
    )


async def enqueue_committed(engine: AsyncEngine, settings: MailSettings, *mails: OutgoingMail) -> list[OutboxMessage]:
    async with AsyncSession(engine, expire_on_commit=False) as session, session.begin():
        return [await enqueue(session, mail, settings) for mail in mails]


@contextlib.asynccontextmanager
async def running(*workers: OutboxWorker) -> AsyncIterator[None]:
    stop = asyncio.Event()
    tasks = [asyncio.create_task(worker.run(stop)) for worker in workers]
    try:
        yield
    finally:
        stop.set()
        await asyncio.wait_for(asyncio.gather(*tasks), 30)


async def rows(engine: AsyncEngine) -> list[OutboxMessage]:
    async with AsyncSession(engine) as session:
        return list((await session.execute(select(OutboxMessage).order_by(OutboxMessage.id))).scalars())


async def test_a_committed_mail_arrives_within_seconds_with_its_headers_and_a_linked_span(
    db_engine: AsyncEngine, smtp: SmtpServer
) -> None:
    settings = mail_settings(smtp)
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    metrics = Metrics(service_version="test", commit="test")
    tracing = Tracing(provider)
    tracing.instrument_engine(db_engine)
    telemetry = MailTelemetry(metrics, tracing)
    # The request that writes the mail runs in a span; its traceparent goes with the row.
    with provider.get_tracer("test").start_as_current_span("POST /register") as request_span:
        [row] = await enqueue_committed(db_engine, settings, a_mail(1, html=True))
    assert row.traceparent is not None

    started = asyncio.get_running_loop().time()
    async with running(worker_for(db_engine, settings, telemetry)):
        received = await smtp.received_at_least(1, within=10)
        await asyncio.sleep(0.3)  # a few idle polls
    assert asyncio.get_running_loop().time() - started < 5
    spans = exporter.get_finished_spans()  # before this test's own queries below

    [mail] = received
    assert mail.recipients == ["person1@example.test"]
    assert mail.sender == "no-reply@example.test"
    assert mail.message_id == row.message_id
    assert row.message_id.endswith("@example.test>")
    assert mail.message["Subject"] == "Mail number 1"
    assert mail.message["From"] == "User Service <no-reply@example.test>"
    assert mail.message["To"] == "person1@example.test"
    plain = mail.message.get_body(("plain",))
    html = mail.message.get_body(("html",))
    assert plain is not None
    assert plain.get_content().replace("\r\n", "\n") == "Hello, this is mail 1.\n"
    assert html is not None
    assert "<b>1</b>" in html.get_content()

    [stored] = await rows(db_engine)
    assert stored.sent_at is not None
    assert stored.attempts == 1
    # The body (with whatever link it carried) is gone once sent; the record stays.
    assert stored.text_body == ""
    assert stored.html_body is None
    assert stored.subject == "Mail number 1"
    assert stored.last_error is None
    assert metrics.registry.get_sample_value("user_service_mail_deliveries_total", {"result": "sent"}) == 1
    assert metrics.registry.get_sample_value("user_service_mail_outbox_depth") == 0
    # Sent within seconds of being written: inside the delivery objective's 60 s bucket.
    age = {"result": "sent", "le": "5.0"}
    assert metrics.registry.get_sample_value("user_service_mail_delivery_age_seconds_bucket", age) == 1

    [delivery] = [span for span in spans if span.name == "mail deliver"]
    assert [link.context.trace_id for link in delivery.links] == [request_span.get_span_context().trace_id]
    # A trace of its own: the request ended long before (and a retry may come days later).
    assert delivery.context.trace_id != request_span.get_span_context().trace_id
    assert delivery.attributes is not None
    assert delivery.attributes["user_service.mail.outbox_id"] == str(row.id)
    assert trace.get_current_span() is trace.INVALID_SPAN
    # The worker's idle polling made no traces; the statements that marked the mail sent
    # are children of its delivery span.
    polling = [s.name for s in spans if s.context.trace_id not in traces_of(delivery, request_span)]
    assert polling == []
    marking = [s for s in spans if s.parent and s.parent.span_id == delivery.context.span_id]
    assert any(s.name.startswith("UPDATE") for s in marking), [s.name for s in marking]


def traces_of(*spans: object) -> set[int]:
    return {span.get_span_context().trace_id for span in spans}  # type: ignore[attr-defined]


async def test_a_rolled_back_transaction_sends_nothing(db_engine: AsyncEngine, smtp: SmtpServer) -> None:
    settings = mail_settings(smtp)
    async with AsyncSession(db_engine) as session, session.begin():
        await enqueue(session, a_mail(1), settings)
        # The state change the mail belonged to failed: the whole transaction goes.
        await session.rollback()

    worker = worker_for(db_engine, settings)
    assert await worker.deliver_due() == 0
    await asyncio.sleep(0.3)
    assert smtp.received == []
    assert await rows(db_engine) == []


async def test_a_server_refusing_for_a_while_gets_every_mail_once_after_it_recovers(
    db_engine: AsyncEngine, smtp: SmtpServer
) -> None:
    settings = mail_settings(smtp)
    metrics = Metrics(service_version="test", commit="test")
    smtp.refuse_for(1.5)
    queued = await enqueue_committed(db_engine, settings, *(a_mail(n) for n in range(8)))

    async with running(worker_for(db_engine, settings, MailTelemetry(metrics, None))):
        received = await smtp.received_at_least(8, within=20)
        await asyncio.sleep(0.5)  # room for a duplicate to show up, if one were coming
        received = smtp.received

    assert smtp.refusals > 0, "the server never refused: the test proved nothing"
    assert Counter(mail.message_id for mail in received) == Counter(row.message_id for row in queued)
    stored = await rows(db_engine)
    assert all(row.sent_at is not None and row.gave_up_at is None for row in stored)
    assert max(row.attempts for row in stored) > 1
    assert metrics.registry.get_sample_value("user_service_mail_deliveries_total", {"result": "failed"}) == (
        smtp.refusals
    )
    assert metrics.registry.get_sample_value("user_service_mail_delivery_retries_total") == smtp.refusals


class CountingTransport(SmtpTransport):
    def __init__(self, settings: MailSettings) -> None:
        super().__init__(settings)
        self.sent = 0

    async def send(self, row: OutboxMessage) -> str | None:
        where = await super().send(row)
        self.sent += 1
        return where


async def test_two_workers_on_two_engines_share_the_outbox_and_never_send_a_mail_twice(
    clean_database: str, db_engine: AsyncEngine, smtp: SmtpServer
) -> None:
    settings = mail_settings(smtp, batch_size=5)
    queued = await enqueue_committed(db_engine, settings, *(a_mail(n) for n in range(60)))
    engines = [create_async_engine(clean_database) for _ in range(2)]
    transports = [CountingTransport(settings) for _ in engines]
    workers = [
        OutboxWorker(engine, transport, settings, MailTelemetry(None, None))
        for engine, transport in zip(engines, transports, strict=True)
    ]
    try:
        async with running(*workers):
            await smtp.received_at_least(60, within=30)
            await asyncio.sleep(0.5)
    finally:
        for engine in engines:
            await engine.dispose()

    received = Counter(mail.message_id for mail in smtp.received)
    assert received == Counter(row.message_id for row in queued), "a mail was lost or sent twice"
    # Both took part: the lock made the second skip rows, not wait for the first.
    assert all(transport.sent > 0 for transport in transports), [t.sent for t in transports]
    assert sum(transport.sent for transport in transports) == 60


async def test_a_mail_older_than_the_give_up_age_is_given_up_with_its_reason(
    db_engine: AsyncEngine, smtp: SmtpServer
) -> None:
    settings = mail_settings(smtp, give_up_after_seconds=1)
    metrics = Metrics(service_version="test", commit="test")
    smtp.refuse_for(60)
    [row] = await enqueue_committed(db_engine, settings, a_mail(1))

    async with running(worker_for(db_engine, settings, MailTelemetry(metrics, None))):
        for _ in range(100):
            [stored] = await rows(db_engine)
            if stored.gave_up_at is not None:
                break
            await asyncio.sleep(0.1)

    assert stored.gave_up_at is not None
    assert stored.sent_at is None
    assert stored.last_error is not None
    assert stored.last_error.startswith("not delivered within 1 s; last error: SMTPDataError: 451")
    assert smtp.received == []
    assert metrics.registry.get_sample_value("user_service_mail_deliveries_total", {"result": "gave_up"}) == 1
    # A mail never sent is a bad event of the delivery objective, whatever its age.
    gave_up = {"result": "gave_up"}
    assert metrics.registry.get_sample_value("user_service_mail_delivery_age_seconds_count", gave_up) == 1
    assert (metrics.registry.get_sample_value("user_service_mail_delivery_age_seconds_sum", gave_up) or 0) >= 1
    # A given-up mail is no longer waiting: the age alert must not keep firing for it.
    assert metrics.registry.get_sample_value("user_service_mail_outbox_depth") == 0
    assert row.message_id == stored.message_id


async def test_a_permanent_refusal_is_given_up_at_once(db_engine: AsyncEngine, smtp: SmtpServer) -> None:
    settings = mail_settings(smtp)
    smtp.refuse_for(60, reply="550 5.1.1 No such user here")
    await enqueue_committed(db_engine, settings, a_mail(1))

    assert await worker_for(db_engine, settings).deliver_due() == 1

    [stored] = await rows(db_engine)
    assert stored.gave_up_at is not None
    assert stored.attempts == 1
    assert stored.last_error == "refused for good: SMTPDataError: 550 5.1.1 No such user here"
    assert await worker_for(db_engine, settings).deliver_due() == 0


async def test_a_mail_not_yet_due_waits(db_engine: AsyncEngine, smtp: SmtpServer) -> None:
    settings = mail_settings(smtp)
    await enqueue_committed(db_engine, settings, a_mail(1))
    async with db_engine.begin() as conn:
        await conn.execute(
            text("UPDATE outbox_messages SET next_attempt_at = :later"),
            {"later": dt.datetime.now(dt.UTC) + dt.timedelta(minutes=5)},
        )
    assert await worker_for(db_engine, settings).deliver_due() == 0
    assert smtp.received == []


async def test_a_row_that_cannot_become_a_mail_is_given_up_and_does_not_block_the_rest(
    db_engine: AsyncEngine, smtp: SmtpServer
) -> None:
    settings = mail_settings(smtp)
    # Written around enqueue's checks (an older release, a hand-made row): a header
    # injection attempt that must never reach the server, at the head of the queue.
    async with db_engine.begin() as conn:
        await conn.execute(
            text(
                "INSERT INTO outbox_messages (id, created_at, kind, recipient, subject, text_body, message_id, "
                "attempts, next_attempt_at) VALUES (:id, :at, 'test_mail', 'a@example.test', "
                ":subject, 'body', '<poison@example.test>', 0, :at)"
            ),
            {
                "id": uuid7(),
                "at": dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1),
                "subject": "Hi\r\nBcc: everyone@example.test",
            },
        )
    [good] = await enqueue_committed(db_engine, settings, a_mail(1))

    worker = worker_for(db_engine, settings)
    assert await worker.deliver_due() == 2

    assert [mail.message_id for mail in smtp.received] == [good.message_id]
    poison = next(row for row in await rows(db_engine) if row.message_id == "<poison@example.test>")
    assert poison.gave_up_at is not None
    assert poison.last_error == "refused for good: not a valid mail: ValueError"
