"""Traces: the span tree of a login, W3C propagation, and nothing at all when tracing is off."""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from sqlalchemy.ext.asyncio import AsyncEngine

from app.container import container_of
from app.main import create_app
from app.settings import Settings
from testkit.live_server import LiveClient, serve
from tests.integration.helpers import Client, login, register


@pytest.fixture
async def traced(settings: Settings, db_engine: AsyncEngine) -> AsyncIterator[tuple[LiveClient, InMemorySpanExporter]]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    async with serve(create_app(settings, tracer_provider=provider)) as client:
        yield client, exporter


def spans_of_trace(exporter: InMemorySpanExporter, trace_id: int) -> list[ReadableSpan]:
    return [s for s in exporter.get_finished_spans() if s.context.trace_id == trace_id]


async def test_a_login_is_one_server_span_with_sql_and_hash_children(
    traced: tuple[Client, InMemorySpanExporter],
) -> None:
    client, exporter = traced
    await register(client, "spanned")
    exporter.clear()
    assert (await login(client, "spanned")).status_code == 200

    (server,) = [s for s in exporter.get_finished_spans() if s.kind is SpanKind.SERVER]
    assert server.name == "POST /api/v1/auth/login"
    assert server.attributes is not None
    assert server.attributes["http.route"] == "/api/v1/auth/login"
    tree = spans_of_trace(exporter, server.context.trace_id)
    children = [s for s in tree if s.parent is not None and s.parent.span_id == server.context.span_id]
    names = [s.name for s in children]
    (verify,) = [s for s in children if s.name == "password verify"]
    assert verify.attributes is not None
    assert float(str(verify.attributes["user_service.hash.queue_wait_seconds"])) >= 0
    assert float(str(verify.attributes["user_service.hash.run_seconds"])) > 0
    sql = [
        s
        for s in children
        if (s.attributes and "db.statement" in s.attributes) or s.name.startswith(("SELECT", "INSERT", "UPDATE"))
    ]
    assert len(sql) >= 3, names  # look-up, session insert, token insert
    # The hash and the SQL sit inside the request, in time as well as in the tree.
    assert server.start_time is not None
    assert server.end_time is not None
    for child in children:
        assert child.start_time is not None
        assert child.end_time is not None
        assert server.start_time <= child.start_time <= child.end_time <= server.end_time


async def test_incoming_traceparent_is_continued(traced: tuple[Client, InMemorySpanExporter]) -> None:
    client, exporter = traced
    trace_id, parent_id = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    await client.get("/api/v1/users/me", headers={"traceparent": f"00-{trace_id}-{parent_id}-01"})
    (server,) = [s for s in exporter.get_finished_spans() if s.kind is SpanKind.SERVER]
    assert format(server.context.trace_id, "032x") == trace_id
    assert server.parent is not None
    assert format(server.parent.span_id, "016x") == parent_id


async def test_a_head_is_traced_as_head(traced: tuple[Client, InMemorySpanExporter]) -> None:
    # app/web/head.py hands Litestar (and the tracing inside it) a GET; the span says HEAD.
    client, exporter = traced
    for path in ("/.well-known/jwks.json", "/no/such/path"):
        exporter.clear()
        await client.head(path)
        (server,) = [s for s in exporter.get_finished_spans() if s.kind is SpanKind.SERVER]
        assert server.name.startswith("HEAD "), server.name
        assert server.attributes is not None
        assert server.attributes["http.method"] == "HEAD"


async def test_probes_and_scrapes_are_not_traced(traced: tuple[Client, InMemorySpanExporter]) -> None:
    client, exporter = traced
    for path in ["/health/live", "/health/ready", "/metrics"]:
        await client.get(path)
    assert [s for s in exporter.get_finished_spans() if s.kind is SpanKind.SERVER] == []


def _exporter_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("OtelBatch")]


async def test_tracing_off_means_no_provider_no_thread_no_spans(
    client: Client, settings: Settings, signing_key_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The default (no OTLP endpoint configured): nothing exists.
    assert container_of(client.app).observability.tracing is None
    await register(client, "untraced")
    await login(client, "untraced")
    assert _exporter_threads() == []
    # Control: with an endpoint configured, the exporter thread does exist.
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:9")
    app = create_app(settings)
    try:
        assert container_of(app).observability.tracing is not None
        assert _exporter_threads() != []
    finally:
        container_of(app).observability.shutdown()
