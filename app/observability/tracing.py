"""OpenTelemetry tracing: an SDK provider configured by the standard OTEL_* variables.

Off (the default without an OTLP endpoint) means nothing at all: no provider, no
exporter thread, no middleware, no SQL hooks; the API's no-op tracer answers.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

from litestar.plugins.opentelemetry import OpenTelemetryConfig, OpenTelemetryPlugin
from opentelemetry import propagate, trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.instrumentation.sqlalchemy.engine import EngineTracer
from opentelemetry.metrics import NoOpMeter
from opentelemetry.sdk.resources import SERVICE_NAME, SERVICE_VERSION, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from sqlalchemy.ext.asyncio import AsyncEngine

# Probes and scrapes every few seconds would drown the traces that matter.
UNTRACED_PATHS = ["^/metrics$", "^/health/"]


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
            )
        )

    def instrument_engine(self, engine: AsyncEngine) -> None:
        """A span for each SQL statement of this engine (not a process-wide patch)."""
        usage = NoOpMeter("user-service").create_up_down_counter("db.client.connections.usage")
        EngineTracer(self.tracer, engine.sync_engine, usage)  # type: ignore[no-untyped-call]

    def record_hash(self, operation: str, queue_wait_seconds: float, run_seconds: float) -> None:
        """A span for one pooled hash, from submission to result; the wait is an attribute."""
        end = time.time_ns()
        started = end - int(run_seconds * 1e9)
        submitted = started - int(queue_wait_seconds * 1e9)
        span = self.tracer.start_span(f"password {operation}", start_time=submitted, kind=trace.SpanKind.INTERNAL)
        span.set_attribute("user_service.hash.operation", operation)
        span.set_attribute("user_service.hash.queue_wait_seconds", queue_wait_seconds)
        span.set_attribute("user_service.hash.run_seconds", run_seconds)
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
