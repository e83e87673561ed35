"""OpenTelemetry tracing: an SDK provider configured by the standard OTEL_* variables.

Off (the default without an OTLP endpoint) means nothing at all: no provider, no
exporter thread, no middleware, no SQL hooks; the API's no-op tracer answers.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from litestar.plugins.opentelemetry import OpenTelemetryConfig, OpenTelemetryPlugin
from opentelemetry import propagate, trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.instrumentation.sqlalchemy.engine import EngineTracer
from opentelemetry.metrics import NoOpMeter
from opentelemetry.sdk.resources import SERVICE_NAME, SERVICE_VERSION, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import Span
from sqlalchemy.ext.asyncio import AsyncEngine

from app.observability.logging import redact_query

if TYPE_CHECKING:
    from app.identity.passwords import HashTiming

# Probes and scrapes every few seconds would drown the traces that matter.
UNTRACED_PATHS = ["^/metrics$", "^/health/"]
# Where the ASGI instrumentation puts the query string (the old HTTP semantic conventions,
# the stable ones, or both, per OTEL_SEMCONV_STABILITY_OPT_IN): full URLs and bare queries.
_URL_ATTRIBUTES = ("http.url", "url.full", "http.target")
_QUERY_ATTRIBUTES = ("url.query",)


def redact_query_in_span(span: Span, _scope: Mapping[str, Any]) -> None:
    """The server span's request hook: the mailed links' ``?token=`` (and any other
    secret-named query parameter) never reaches a span. It runs as the span starts, before
    any processor exports it; the span's other attributes stay as the instrumentation set them."""
    attributes = getattr(span, "attributes", None)  # the SDK's recording span; absent on a no-op one
    if not attributes:
        return
    for key in _URL_ATTRIBUTES:
        value = attributes.get(key)
        if isinstance(value, str) and "?" in value:
            before, _, query = value.partition("?")
            span.set_attribute(key, f"{before}?{redact_query(query)}")
    for key in _QUERY_ATTRIBUTES:
        value = attributes.get(key)
        if isinstance(value, str):
            span.set_attribute(key, redact_query(value))


@dataclass
class Tracing:
    provider: TracerProvider

    @property
    def tracer(self) -> trace.Tracer:
        return self.provider.get_tracer("user-service")

    def litestar_plugin(self) -> OpenTelemetryPlugin:
        return OpenTelemetryPlugin(
            OpenTelemetryConfig(
                tracer_provider=self.provider,
                exclude=UNTRACED_PATHS,
                # One server span per request; the ASGI receive/send spans add nothing here.
                exclude_spans=["receive", "send"],
                server_request_hook_handler=redact_query_in_span,
            )
        )

    def instrument_engine(self, engine: AsyncEngine) -> None:
        """A span for each SQL statement of this engine (not a process-wide patch)."""
        usage = NoOpMeter("user-service").create_up_down_counter("db.client.connections.usage")
        EngineTracer(self.tracer, engine.sync_engine, usage)  # type: ignore[no-untyped-call]

    def record_hash(self, operation: str, timing: HashTiming) -> None:
        """A span for one pooled hash, from submission until the request resumed; the
        parts (waiting for a worker, on the worker, CPU it got, the event loop's delay in
        resuming) are attributes."""
        end = time.time_ns()
        elapsed = timing.queue_wait_seconds + timing.run_seconds + timing.resume_seconds
        span = self.tracer.start_span(
            f"password {operation}", start_time=end - int(elapsed * 1e9), kind=trace.SpanKind.INTERNAL
        )
        span.set_attribute("user_service.hash.operation", operation)
        span.set_attribute("user_service.hash.queue_wait_seconds", timing.queue_wait_seconds)
        span.set_attribute("user_service.hash.run_seconds", timing.run_seconds)
        span.set_attribute("user_service.hash.cpu_seconds", timing.cpu_seconds)
        span.set_attribute("user_service.hash.resume_seconds", timing.resume_seconds)
        span.end(end_time=end)

    def shutdown(self) -> None:
        self.provider.shutdown()


def _resource(service_name: str, service_version: str) -> Resource:
    # OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES win over the settings' defaults.
    defaults: dict[str, str] = {SERVICE_VERSION: service_version}
    attributes = os.environ.get("OTEL_RESOURCE_ATTRIBUTES", "")
    if "OTEL_SERVICE_NAME" not in os.environ and "service.name=" not in attributes:
        defaults[SERVICE_NAME] = service_name
    return Resource.create(defaults)


def build_tracing(
    *, enabled: bool, service_name: str, service_version: str, provider: TracerProvider | None = None
) -> Tracing | None:
    """The app's tracing, or None when off. ``provider`` is for tests (in-memory exporters)."""
    if provider is not None:
        return Tracing(provider)
    if not enabled:
        return None
    # Sampler (OTEL_TRACES_SAMPLER[_ARG]) and exporter endpoint, headers, timeout
    # (OTEL_EXPORTER_OTLP_*) come from the environment, as the SDK documents.
    provider = TracerProvider(resource=_resource(service_name, service_version))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    return Tracing(provider)


def propagation_headers() -> dict[str, str]:
    """W3C traceparent (and baggage) of the current span, for outgoing HTTP calls."""
    headers: dict[str, str] = {}
    propagate.inject(headers)
    return headers
