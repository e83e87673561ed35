"""A load test inside the service's telemetry: with an OTLP endpoint set, the runner starts
Locust with ``--otel`` and each scenario request is the parent of the service's server
span, so one trace holds the load generator's view and the service's."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from testkit.otlp_receiver import ReceivedSpan, otlp_receiver, received_spans
from tests.loadtests.test_smoke_profile import explain, run_loadtests

pytestmark = pytest.mark.slow

CLIENT, SERVER = 3, 2  # opentelemetry.proto.trace.v1.Span.SpanKind


def test_each_load_test_request_is_the_parent_of_the_services_span(clean_database: str, tmp_path: Path) -> None:
    slo = tmp_path / "slo.toml"
    slo.write_text("[traced]\nerror_ratio_max = 0.0\nshed_ratio_max = 0.0\n")
    with otlp_receiver() as receiver:
        result = run_loadtests(
            clean_database,
            tmp_path / "traced",
            *("--profile", "smoke", "--run-time", "8s", "--users", "4"),
            *("--slo", str(slo), "--slo-profile", "traced"),
            timeout=180,
            OTEL_EXPORTER_OTLP_ENDPOINT=receiver.endpoint,
            OTEL_METRICS_EXPORTER="none",  # this receiver takes traces only
            OTEL_BSP_SCHEDULE_DELAY="200",
        )
        assert result.returncode == 0, explain(result)
        assert "--otel" in result.stdout
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not joined(received_spans(receiver)):
            time.sleep(0.2)
        spans = received_spans(receiver)
    pairs = joined(spans)
    assert pairs, f"no service span under a Locust span among {len(spans)} spans: {sorted({s.name for s in spans})}"
    names = {client.name for client, _ in pairs}
    assert "GET /api/v1/users/me" in names
    assert "POST /api/v1/auth/login" in names
    for client, server in pairs:
        assert client.service == "locust"
        assert server.service != "locust"
        assert server.name.split(" ", 1)[0] == client.name.split(" ", 1)[0]  # the same method


def joined(spans: list[ReceivedSpan]) -> list[tuple[ReceivedSpan, ReceivedSpan]]:
    """(Locust client span, service server span) pairs where the first is the parent."""
    clients = {(s.trace_id, s.span_id): s for s in spans if s.kind == CLIENT and s.service == "locust"}
    return [
        (clients[(s.trace_id, s.parent_span_id)], s)
        for s in spans
        if s.kind == SERVER and (s.trace_id, s.parent_span_id) in clients
    ]
