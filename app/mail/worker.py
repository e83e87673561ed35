"""The delivery worker: takes due mails from the outbox, sends them, marks them.

Each mail is claimed, sent and marked in one short transaction of its own::

    BEGIN; SELECT ... FOR UPDATE SKIP LOCKED LIMIT 1;  -- claim
    <SMTP exchange>                                     -- send
    UPDATE ... SET sent_at = now(); COMMIT;             -- mark

While the row is locked no other worker can take it; once the mark commits it is never
taken again. A failed attempt updates the row (attempts, next_attempt_at, last_error) in
the same transaction instead. The lock is held for one SMTP exchange (bounded by
``smtp_timeout_seconds``), never for a batch.

The one window left: the server accepted the mail (250) and the worker died, or lost
the database, before the commit. The row is still pending and is sent again; it carries
the same Message-ID, so the receiving side (and the person) can recognise the repeat.
Closing that window would need the SMTP server to take part in our transaction, which
SMTP cannot do: delivery is at least once, duplicates are bounded to that crash.

SQLite (the embedded default) has no row locks: one worker per database file delivers.
Every worker takes an exclusive ``flock`` on ``<database file>.mail-worker.lock`` first
and only its holder delivers (uvicorn with several worker processes runs one delivery
worker each; SQLite is on one host, so a file lock reaches them all); the others wait for
it and take over if the holder exits. pysqlite opens no transaction for a SELECT, so the
claim holds no lock while the mail is sent, and request writes are never blocked behind
an SMTP exchange.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import fcntl
import random
import secrets
from collections.abc import AsyncIterator
from pathlib import Path

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from app.db.models import OutboxMessage, utcnow
from app.mail.repository import next_due, outbox_state
from app.mail.transports import MAX_ERROR_LENGTH, DeliveryError, Transport
from app.observability.mail import MailTelemetry
from app.settings import MailSettings


def retry_delay(settings: MailSettings, failures: int, rng: random.Random) -> float:
    """Full jitter (AWS architecture blog, "Exponential backoff and jitter"): a random wait
    up to the exponential bound, so workers that failed together spread out."""
    bound = min(settings.retry_max_seconds, settings.retry_base_seconds * 2 ** min(max(failures - 1, 0), 32))
    return rng.uniform(0, bound)


class OutboxWorker:
    def __init__(
        self,
        engine: AsyncEngine,
        transport: Transport,
        settings: MailSettings,
        telemetry: MailTelemetry,
        *,
        rng: random.Random | None = None,
    ) -> None:
        self._sessions = async_sessionmaker(engine, expire_on_commit=False)
        self._dialect = engine.dialect.name
        self._transport = transport
        self._settings = settings
        self._telemetry = telemetry
        # The operating system's generator: jitter needs no secrecy, but this keeps the
        # service free of the predictable one (the scanners' rule, without an exception).
        self._rng = rng or secrets.SystemRandom()
        database = engine.url.database
        self._lock_file = (
            Path(f"{database}.mail-worker.lock")
            if self._dialect == "sqlite" and database not in (None, "", ":memory:")
            else None
        )

    async def run(self, stop: asyncio.Event) -> None:
        """Deliver until ``stop`` is set; the mail being sent when it is set is finished
        and marked first (a cancelled send would be sent again after the restart)."""
        async with self._sole_worker_on_sqlite(stop) as may_deliver:
            while may_deliver and not stop.is_set():
                handled = 0
                try:
                    handled = await self.deliver_due(stop)
                    await self.sample()
                except Exception as exc:  # noqa: BLE001 - the database may be away; next round
                    self._telemetry.worker_failed(type(exc).__name__)
                if handled < self._settings.batch_size:
                    await self._pause(stop)

    async def _pause(self, stop: asyncio.Event) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), self._settings.poll_interval_seconds)

    @contextlib.asynccontextmanager
    async def _sole_worker_on_sqlite(self, stop: asyncio.Event) -> AsyncIterator[bool]:
        """On SQLite, yields True once this worker holds the database's delivery lock (False
        if stopped first); elsewhere at once (row locks share the work)."""
        if self._lock_file is None:
            yield True
            return
        with self._lock_file.open("a+b") as handle:
            while True:
                try:
                    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    await self._pause(stop)
                    if stop.is_set():
                        yield False
                        return
            try:
                yield True
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    async def deliver_due(self, stop: asyncio.Event | None = None) -> int:
        """One round: up to ``batch_size`` due mails, each in its own transaction. Returns
        how many were handled (sent, failed or given up)."""
        handled = 0
        while handled < self._settings.batch_size and not (stop and stop.is_set()):
            if not await self._deliver_next():
                break
            handled += 1
        return handled

    async def sample(self) -> None:
        """The outbox gauges (depth, age of the oldest waiting mail)."""
        with self._telemetry.polling():
            async with self._sessions() as session:
                state = await outbox_state(session)
        age = 0.0
        if state.oldest_created_at is not None:
            age = max(0.0, (utcnow() - state.oldest_created_at).total_seconds())
        self._telemetry.outbox_sampled(depth=state.depth, oldest_age_seconds=age)

    async def _deliver_next(self) -> bool:
        async with self._sessions() as session, session.begin():
            with self._telemetry.polling():
                row = (await session.execute(next_due(self._dialect, utcnow()))).scalar_one_or_none()
            if row is None:
                return False
            await self._attempt(session, row)
        return True

    async def _attempt(self, session: AsyncSession, row: OutboxMessage) -> None:
        now = utcnow()
        attempt = row.attempts + 1
        with self._telemetry.delivery(outbox_id=row.id, kind=row.kind, attempt=attempt, traceparent=row.traceparent):
            age = (now - row.created_at).total_seconds()
            if age > self._settings.give_up_after_seconds:
                # Not sent at all: too late to be of use to the person.
                reason = f"not delivered within {self._settings.give_up_after_seconds} s"
                if row.last_error:
                    reason += f"; last error: {row.last_error}"
                self._give_up(row, now, reason, attempt=row.attempts)
                return
            row.attempts = attempt
            try:
                where = await self._transport.send(row)
            except DeliveryError as failure:
                self._failed(row, now, failure)
                return
            except Exception as exc:  # noqa: BLE001 - a bug must not pin this row at the head of the queue
                # Only the class: an unexpected exception's text could hold anything.
                self._failed(row, now, DeliveryError(f"unexpected {type(exc).__name__}", permanent=False))
                return
            row.sent_at = now
            row.last_error = None
            # A sent mail is never sent again, and its body holds live single-use links
            # (a reset token is valid for minutes): not kept in the database, its backups
            # or its replicas. Headers stay for the record.
            row.text_body = ""
            row.html_body = None
            await session.flush()
            self._telemetry.sent(
                outbox_id=row.id,
                kind=row.kind,
                attempt=attempt,
                message_id=row.message_id,
                age_seconds=(utcnow() - row.created_at).total_seconds(),
            )
            if where is not None:
                self._telemetry.written_to_file(outbox_id=row.id, kind=row.kind, path=where)

    def _failed(self, row: OutboxMessage, now: dt.datetime, failure: DeliveryError) -> None:
        row.last_error = failure.reason
        if failure.permanent:
            self._give_up(row, now, f"refused for good: {failure.reason}", attempt=row.attempts)
        elif row.attempts >= self._settings.max_attempts:
            self._give_up(row, now, f"{row.attempts} attempts failed; last: {failure.reason}", attempt=row.attempts)
        else:
            delay = retry_delay(self._settings, row.attempts, self._rng)
            row.next_attempt_at = now + dt.timedelta(seconds=delay)
            self._telemetry.failed(
                outbox_id=row.id, kind=row.kind, attempt=row.attempts, error=failure.reason, retry_in_seconds=delay
            )

    def _give_up(self, row: OutboxMessage, now: dt.datetime, reason: str, *, attempt: int) -> None:
        row.gave_up_at = now
        row.last_error = reason[:MAX_ERROR_LENGTH]
        # Never sent, and never to be: its live links must not stay in the database either.
        row.text_body = ""
        row.html_body = None
        self._telemetry.gave_up(
            outbox_id=row.id,
            kind=row.kind,
            attempt=attempt,
            reason=row.last_error,
            age_seconds=(now - row.created_at).total_seconds(),
        )
