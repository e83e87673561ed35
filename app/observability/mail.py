"""What the mail outbox reports: one log event per delivery outcome with its metric, the
outbox gauges, and a span per delivery linked to the trace of the request that wrote the
message. app/mail/ calls these and knows nothing of structlog, Prometheus or OpenTelemetry.

Recipients are personal data and stay out of logs and spans: the outbox row's id and the
mail's kind identify a delivery well enough to find the row."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from uuid import UUID

from opentelemetry import trace
from opentelemetry.instrumentation.utils import suppress_instrumentation
from opentelemetry.trace import Link, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from app.observability.logging import get_logger
from app.observability.metrics import Metrics
from app.observability.tracing import Tracing, propagation_headers

_log = get_logger("user_service.mail")
_propagator = TraceContextTextMapPropagator()


def current_traceparent() -> str | None:
    """The W3C traceparent of the span running now (the request's), for an outbox row."""
    return propagation_headers().get("traceparent")


class MailTelemetry:
    def __init__(self, metrics: Metrics | None, tracing: Tracing | None) -> None:
        self._metrics = metrics
        self._tracing = tracing

    @contextlib.contextmanager
    def polling(self) -> Iterator[None]:
        """The worker's look for due mail and its gauge sample, once a second per process:
        no SQL spans for them, or idle polling would be most of the traces stored. The
        statements that deliver a mail run inside its delivery span and are traced."""
        with suppress_instrumentation():
            yield

    @contextlib.contextmanager
    def delivery(self, *, outbox_id: UUID, kind: str, attempt: int, traceparent: str | None) -> Iterator[None]:
        """A span around one delivery attempt. It starts a trace of its own (the worker is
        not inside any request) and links to the request's trace: the request ended long
        ago, and a retry days later must not be drawn as part of it."""
        if self._tracing is None:
            yield
            return
        links = []
        if traceparent:
            origin = trace.get_current_span(_propagator.extract({"traceparent": traceparent})).get_span_context()
            if origin.is_valid:
                links.append(Link(origin))
        with self._tracing.tracer.start_as_current_span(
            "mail deliver",
            context=trace.set_span_in_context(trace.INVALID_SPAN),
            kind=SpanKind.PRODUCER,
            links=links,
            attributes={
                "user_service.mail.outbox_id": str(outbox_id),
                "user_service.mail.kind": kind,
                "user_service.mail.attempt": attempt,
            },
            record_exception=False,  # the error text is recorded below, cut like last_error
            set_status_on_exception=False,
        ) as span:
            try:
                yield
            except Exception as exc:
                span.set_status(Status(StatusCode.ERROR, type(exc).__name__))
                raise

    def sent(self, *, outbox_id: UUID, kind: str, attempt: int, message_id: str, age_seconds: float) -> None:
        """``age_seconds``: since the mail was written, which is what its reader waited."""
        _log.info(
            "mail_sent",
            outbox_id=str(outbox_id),
            kind=kind,
            attempt=attempt,
            message_id=message_id,
            age_seconds=round(age_seconds, 3),
        )
        self._count("sent", attempt, age_seconds)

    def failed(self, *, outbox_id: UUID, kind: str, attempt: int, error: str, retry_in_seconds: float) -> None:
        _log.warning(
            "mail_delivery_failed",
            outbox_id=str(outbox_id),
            kind=kind,
            attempt=attempt,
            error=error,
            retry_in_seconds=round(retry_in_seconds, 3),
        )
        self._count("failed", attempt)
        trace.get_current_span().set_status(Status(StatusCode.ERROR, error))

    def gave_up(self, *, outbox_id: UUID, kind: str, attempt: int, reason: str, age_seconds: float) -> None:
        _log.error(
            "mail_gave_up",
            outbox_id=str(outbox_id),
            kind=kind,
            attempt=attempt,
            reason=reason,
            age_seconds=round(age_seconds, 3),
        )
        self._count("gave_up", attempt, age_seconds)
        trace.get_current_span().set_status(Status(StatusCode.ERROR, reason))

    def written_to_file(self, *, outbox_id: UUID, kind: str, path: str) -> None:
        """The development transport: where to find the mail a person would have got."""
        _log.info("mail_written_to_file", outbox_id=str(outbox_id), kind=kind, path=path)

    def outbox_sampled(self, *, depth: int, oldest_age_seconds: float) -> None:
        if self._metrics:
            self._metrics.mail_outbox_depth.set(depth)
            self._metrics.mail_outbox_oldest_age.set(oldest_age_seconds)

    def worker_failed(self, error: str) -> None:
        """A round of the worker failed as a whole (the database away): retried next round."""
        _log.warning("mail_worker_round_failed", error=error)

    def _count(self, result: str, attempt: int, age_seconds: float | None = None) -> None:
        if self._metrics:
            self._metrics.mail_deliveries.labels(result=result).inc()
            if age_seconds is not None:
                # An outcome (sent or given up), not a retry: one observation per mail.
                self._metrics.mail_delivery_age.labels(result=result).observe(age_seconds)
            if attempt > 1:
                self._metrics.mail_retries.inc()
