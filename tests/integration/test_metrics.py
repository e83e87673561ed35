"""GET /metrics after real traffic: RED per route template, domain signals, exemplars."""

from __future__ import annotations

import asyncio
from pathlib import Path

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample
from sqlalchemy.ext.asyncio import AsyncEngine

from app.main import create_app
from app.settings import Settings
from testkit.live_server import serve
from tests.conftest import make_settings
from tests.integration.helpers import AUTH, ME, USERS, Client, bearer, login, make_user, register


async def scrape(client: Client) -> list[Sample]:
    response = await client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"  # prometheus_client's
    return [sample for family in text_string_to_metric_families(response.text) for sample in family.samples]


def value(samples: list[Sample], name: str, **labels: str) -> float:
    matching = [s.value for s in samples if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())]
    assert matching, f"no sample {name}{labels}"
    return sum(matching)


async def test_red_metrics_use_route_templates_and_skip_the_scrape(client: Client, db_engine: AsyncEngine) -> None:
    admin = await make_user(client, db_engine, role="admin")
    target = await make_user(client, db_engine)
    for _ in range(3):
        await client.get(f"{USERS}/{target['id']}", headers=admin["headers"])
    await client.get("/no/such/page")
    await client.request("PROPFIND", "/api/v1/users/me")
    await scrape(client)
    samples = await scrape(client)

    count = "http_server_request_duration_seconds_count"
    assert value(samples, count, http_route="/api/v1/users/{user_id}", http_response_status_code="200") == 3
    assert value(samples, count, http_route="unmatched", http_response_status_code="404") == 1
    assert value(samples, count, http_request_method="_OTHER") == 1
    routes = {s.labels.get("http_route") for s in samples if s.name.startswith("http_server_")}
    assert "/metrics" not in routes
    assert not any(target["id"] in (route or "") for route in routes), "raw paths must never become labels"
    assert value(samples, "http_server_active_requests", http_request_method="GET") == 0


async def test_domain_signals_follow_what_happened(client: Client, db_engine: AsyncEngine) -> None:
    await register(client, "counted")
    await register(client, "counted")  # conflict
    await register(client, "x")  # invalid
    tokens = (await login(client, "counted")).json()
    await login(client, "counted", "wrong-password-1")
    await login(client, "nobody_at_all")
    second = (await client.post(f"{AUTH}/refresh", json={"refresh_token": tokens["refresh_token"]})).json()
    await client.post(f"{AUTH}/refresh", json={"refresh_token": tokens["refresh_token"]})  # reuse
    await client.get(ME, headers=bearer(second))
    samples = await scrape(client)

    assert value(samples, "user_service_registrations_total", result="created") == 1
    assert value(samples, "user_service_registrations_total", result="conflict") == 1
    assert value(samples, "user_service_registrations_total", result="invalid") == 1
    # A wrong password and an unknown name are one series: the metrics must not tell them apart.
    for result, expected in [("success", 1), ("failed", 2)]:
        assert value(samples, "user_service_login_attempts_total", result=result) == expected
    results = {s.labels["result"] for s in samples if s.name == "user_service_login_attempts_total"}
    assert results == {"success", "failed", "shed", "throttled"}
    assert value(samples, "user_service_token_refreshes_total", result="rotated") == 1
    assert value(samples, "user_service_token_refreshes_total", result="reused") == 1
    assert value(samples, "user_service_refresh_token_reuse_detections_total") == 1
    assert value(samples, "user_service_tokens_issued_total", kind="access") == 2
    # One hash per registration that got that far, one verify per login attempt.
    assert value(samples, "user_service_password_hash_duration_seconds_count", operation="hash") == 1
    assert value(samples, "user_service_password_hash_duration_seconds_count", operation="verify") == 3
    assert value(samples, "user_service_password_hash_workers") == 2
    assert value(samples, "user_service_password_hash_running") == 0
    assert value(samples, "user_service_db_pool_connections_max") == 20
    assert value(samples, "user_service_build_info", version="0.1.0") == 1


async def test_shed_hashes_are_counted(settings: Settings, signing_key_file: Path, db_engine: AsyncEngine) -> None:
    slow = make_settings(
        str(settings.db.url),
        signing_key_file,
        passwords={"time_cost": 3, "memory_cost_kib": 32_768, "pool_size": 1, "queue_size": 0},
    )
    async with serve(create_app(slow)) as client:
        await register(client, "stampede")
        responses = await asyncio.gather(*(login(client, "stampede") for _ in range(6)))
        shed = sum(r.status_code == 503 for r in responses)
        samples = await scrape(client)
    assert shed >= 1
    assert value(samples, "user_service_password_hash_rejections_total", operation="verify") == shed
    assert value(samples, "user_service_login_attempts_total", result="shed") == shed
    assert value(samples, "user_service_password_hash_queue_capacity") == 0


async def test_latency_exemplars_carry_the_trace_id_in_openmetrics(settings: Settings, db_engine: AsyncEngine) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    async with serve(create_app(settings, tracer_provider=provider)) as client:
        await register(client, "exemplary")
        response = await client.get("/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"})
        plain = await client.get("/metrics")
    assert response.headers["content-type"].startswith("application/openmetrics-text")
    server_span = next(s for s in exporter.get_finished_spans() if s.name == "POST /api/v1/auth/register")
    trace_id = format(server_span.context.trace_id, "032x")
    bucket_lines = [line for line in response.text.splitlines() if 'http_route="/api/v1/auth/register"' in line]
    assert any(f'# {{trace_id="{trace_id}"}}' in line for line in bucket_lines)
    assert "trace_id" not in plain.text  # the classic text format has no exemplars
    hash_lines = [line for line in response.text.splitlines() if line.startswith("user_service_password_hash_duration")]
    assert any(f'# {{trace_id="{trace_id}"}}' in line for line in hash_lines), "the hash links to its request's trace"


async def test_every_api_operation_has_its_5xx_series_before_its_first_failure(client: Client) -> None:
    """A failure that creates its series is invisible to rate(): the first 500 of a quiet
    route would never reach the availability SLO. So they exist, at 0, from the start; only
    the API's, only 500 and 503, so that the cost stays bounded."""
    samples = await scrape(client)
    count = "http_server_request_duration_seconds_count"
    for method, route in [
        ("POST", "/api/v1/auth/login"),
        ("GET", "/api/v1/users/me"),
        ("DELETE", "/api/v1/users/{user_id}"),
    ]:
        for status in ("500", "503"):
            assert (
                value(samples, count, http_request_method=method, http_route=route, http_response_status_code=status)
                == 0
            )
            assert (
                value(
                    samples, "http_server_errors_total", http_request_method=method, http_route=route, error_type=status
                )
                == 0
            )
    precreated = {
        (s.labels["http_request_method"], s.labels["http_route"])
        for s in samples
        if s.name == count and s.labels["http_response_status_code"] in {"500", "503"}
    }
    assert all(route.startswith("/api/") for _, route in precreated)
    assert not {method for method, _ in precreated} & {"OPTIONS", "HEAD"}
    assert 20 <= len(precreated) <= 60
