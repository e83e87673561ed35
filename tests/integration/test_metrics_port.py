"""USER_SERVICE_METRICS__PORT: /metrics only on a listener of its own, over real HTTP
(issue 12, finding 7: the service port must never give the metrics away)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy.ext.asyncio import AsyncEngine

from app.main import create_app
from app.settings import Settings
from app.system import metrics as metrics_module
from testkit.live_server import serve
from testkit.ports import free_port
from testkit.server_process import CLEAN_EXIT, ServerProcess
from tests.integration.helpers import login, register

LOGIN_ATTEMPTS = "user_service_login_attempts_total"


def with_metrics_port(settings: Settings, port: int) -> Settings:
    metrics = settings.metrics.model_copy(update={"port": port, "host": "127.0.0.1"})
    return settings.model_copy(update={"metrics": metrics})


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


async def test_with_a_metrics_port_the_service_port_has_no_metrics(settings: Settings, db_engine: AsyncEngine) -> None:
    port = free_port()
    async with serve(create_app(with_metrics_port(settings, port))) as client:
        await register(client, "scraped")
        assert (await login(client, "scraped", "wrong-password-1")).status_code == 401
        on_service_port = await client.get("/metrics")
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as scraper:
            exposition = await scraper.get("/metrics")
            openmetrics = await scraper.get("/metrics", headers={"Accept": "application/openmetrics-text"})
            elsewhere = await scraper.get("/health/live")
            posted = await scraper.post("/metrics")
            head = await scraper.head("/metrics")

    assert on_service_port.status_code == 404
    assert on_service_port.headers["content-type"] == "application/problem+json"
    assert exposition.status_code == 200
    assert exposition.headers["content-type"].startswith("text/plain")
    assert samples(exposition.text)[(LOGIN_ATTEMPTS, (("result", "failed"),))] == 1
    assert openmetrics.headers["content-type"].startswith("application/openmetrics-text")
    assert openmetrics.text.endswith("# EOF\n")
    # The metrics port serves the exposition and nothing else: no API, no probes.
    assert elsewhere.status_code == 404
    assert posted.status_code == 405
    assert head.status_code == 200
    assert not head.content


async def test_without_a_metrics_port_metrics_stay_on_the_service_port(client: httpx.AsyncClient) -> None:
    response = await client.get("/metrics")
    assert response.status_code == 200
    assert (LOGIN_ATTEMPTS, (("result", "failed"),)) in samples(response.text)


async def test_a_slow_or_oversized_scrape_request_is_cut(
    settings: Settings, db_engine: AsyncEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(metrics_module, "READ_TIMEOUT_SECONDS", 0.5)
    port = free_port()
    async with serve(create_app(with_metrics_port(settings, port))):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")  # the headers never end
        await writer.drain()
        async with asyncio.timeout(3):
            assert await reader.read() == b""  # closed by the server, unanswered
        writer.close()

        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /metrics HTTP/1.1\r\nX-Filler: " + b"a" * 20_000 + b"\r\n\r\n")
        await writer.drain()
        async with asyncio.timeout(3):
            assert await reader.read() == b""
        writer.close()


def test_the_metrics_port_may_not_be_the_service_port(settings: Settings) -> None:
    with pytest.raises(ValueError, match="USER_SERVICE_METRICS__PORT"):
        Settings.model_validate(
            {**settings.model_dump(), "server": {"port": 8000}, "metrics": {"port": 8000}},
        )


@pytest.mark.slow
def test_two_workers_share_the_metrics_port_and_answer_the_sum(
    server_process: Callable[..., ServerProcess], tmp_path: Path
) -> None:
    """Both uvicorn workers bind the metrics port (SO_REUSEPORT); whichever the kernel
    picks answers with the total of both (multiprocess mode)."""
    metrics_port = free_port()
    server = server_process(
        USER_SERVICE_SERVER__WORKERS="2",
        USER_SERVICE_METRICS__PORT=str(metrics_port),
        PROMETHEUS_MULTIPROC_DIR=str(tmp_path / "prometheus"),
    )
    server.start()
    try:
        # A new connection each time; which worker accepts is the kernel's choice, so go on
        # until both have served (and written their counts) some.
        sent = 0
        while sent < 400 and len(served_by(tmp_path / "prometheus")) < 2:
            for _ in range(20):
                assert httpx.get(f"{server.base_url}/health/live", headers={"Connection": "close"}).status_code == 200
            sent += 20
        assert len(served_by(tmp_path / "prometheus")) == 2, "both workers must have served requests"
        assert httpx.get(f"{server.base_url}/metrics").status_code == 404
        totals = set()
        for _ in range(8):
            scraped = samples(httpx.get(f"http://127.0.0.1:{metrics_port}/metrics").text)
            totals.add(
                sum(
                    v
                    for (name, labels), v in scraped.items()
                    if name == "http_server_request_duration_seconds_count" and ("http_route", "/health/live") in labels
                )
            )
        assert totals == {sent}
    finally:
        assert server.stop() in CLEAN_EXIT, server.output


def served_by(metrics_dir: Path) -> set[str]:
    """The worker pids that wrote counters (prometheus-client's counter_<pid>.db files)."""
    return {path.name.split("_")[-1] for path in metrics_dir.glob("counter_*.db")}
