"""Builds the app's observability from settings: the façade the rest of the service reports to.

It knows nothing of the pieces it watches: app/container.py connects their hooks (the
hashing pool's, the database engine's) to the methods here."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from litestar.plugins import PluginProtocol
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from sqlalchemy.ext.asyncio import AsyncEngine

from app.db.pool import MeasuredQueuePool
from app.observability.events import SecurityEvents
from app.observability.http import HttpTelemetry
from app.observability.logging import configure_logging
from app.observability.mail import MailTelemetry
from app.observability.metrics import Metrics
from app.observability.tracing import Tracing, build_tracing
from app.settings import Settings

if TYPE_CHECKING:
    from app.identity.passwords import HashTiming


# Twice a second: 120 observations a minute per process, cheap, and a stall of a quarter of
# a second or more lands in the histogram within the scrape it happened in.
EVENT_LOOP_SAMPLE_SECONDS = 0.5


@dataclass
class Observability:
    metrics: Metrics | None
    tracing: Tracing | None
    events: SecurityEvents
    http: HttpTelemetry
    mail: MailTelemetry
    pool_sample_seconds: float

    def plugins(self) -> list[PluginProtocol]:
        return [self.tracing.litestar_plugin()] if self.tracing else []

    def hashing_pool(self, workers: int, queue_capacity: int) -> None:
        if self.metrics:
            self.metrics.hash_workers.set(workers)
            self.metrics.hash_queue_capacity.set(queue_capacity)

    def hash_finished(self, operation: str, timing: HashTiming) -> None:
        """One pooled hash or verify is done; called in the request's context, so its trace
        is the exemplar and the parent of the hash's span."""
        if self.metrics:
            exemplar = current_trace_exemplar() if not self.metrics.multiprocess else None
            self.metrics.hash_duration.labels(operation=operation).observe(timing.run_seconds, exemplar)
            self.metrics.hash_queue_wait.labels(operation=operation).observe(timing.queue_wait_seconds, exemplar)
            self.metrics.hash_cpu.labels(operation=operation).inc(timing.cpu_seconds)
        if self.tracing:
            self.tracing.record_hash(operation, timing)

    def hash_load(self, running: int, queued: int) -> None:
        if self.metrics:
            self.metrics.hash_running.set(running)
            self.metrics.hash_queue_depth.set(queued)

    def hash_shed(self, operation: str) -> None:
        if self.metrics:
            self.metrics.hash_rejections.labels(operation=operation).inc()

    def readiness_changed(self, ready: bool) -> None:
        if self.metrics:
            self.metrics.readiness_transitions.labels(to="ready" if ready else "not_ready").inc()

    def watch_engine(self, engine: AsyncEngine) -> None:
        if self.tracing:
            self.tracing.instrument_engine(engine)
        if isinstance(engine.pool, MeasuredQueuePool):
            engine.pool.checkout_observers.append(self.db_checkout)

    def db_checkout(self, waited_seconds: float, timed_out: bool) -> None:
        if self.metrics:
            if timed_out:
                self.metrics.db_connection_timeouts.inc()
            else:
                self.metrics.db_connection_wait.observe(waited_seconds)

    async def sample_db_pool(self, engine: AsyncEngine, capacity: int) -> None:
        """Keep the pool gauges current (they must be plain gauges to work across workers).
        ``capacity``: the most connections the pool may open (size + overflow)."""
        if self.metrics is None:
            return
        self.metrics.db_pool_max.set(capacity)
        while True:
            # engine.pool, not a reference kept from before: dispose() replaces the pool.
            pool: Any = engine.pool
            with contextlib.suppress(AttributeError, TypeError):
                self.metrics.db_pool_in_use.set(pool.checkedout())
                self.metrics.db_pool_idle.set(pool.checkedin())
            await asyncio.sleep(self.pool_sample_seconds)

    async def sample_event_loop_lag(self, interval_seconds: float = EVENT_LOOP_SAMPLE_SECONDS) -> None:
        """Sleep ``interval_seconds`` again and again, and record how much later than that
        the loop woke this task: the delay every callback on the loop shared meanwhile."""
        if self.metrics is None:
            return
        loop = asyncio.get_running_loop()
        while True:
            asked_at = loop.time()
            await asyncio.sleep(interval_seconds)
            self.metrics.event_loop_lag.observe(max(0.0, loop.time() - asked_at - interval_seconds))

    def shutdown(self) -> None:
        if self.tracing:
            self.tracing.shutdown()
        if self.metrics:
            self.metrics.process_exited()


def current_trace_exemplar() -> dict[str, str] | None:
    context = trace.get_current_span().get_span_context()
    return {"trace_id": trace.format_trace_id(context.trace_id)} if context.is_valid else None


def build_observability(settings: Settings, *, version: str, tracer_provider: TracerProvider | None) -> Observability:
    configure_logging(settings.logging)
    metrics = (
        Metrics(
            service_version=settings.build_version or version,
            commit=settings.build_commit,
            shared_store=settings.redis_url is not None,
        )
        if settings.metrics.enabled
        else None
    )
    tracing = build_tracing(
        enabled=settings.tracing.is_enabled,
        service_name=settings.service_name,
        service_version=settings.build_version or version,
        provider=tracer_provider,
    )
    return Observability(
        metrics=metrics,
        tracing=tracing,
        events=SecurityEvents(metrics),
        http=HttpTelemetry(metrics),
        mail=MailTelemetry(metrics, tracing),
        pool_sample_seconds=settings.metrics.pool_sample_seconds,
    )
