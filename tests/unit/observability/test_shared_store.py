"""The shared-store health: a failure skips Redis for a while, a success (a request's or
the probe's) brings it back; logged once per outage, counted per fallback operation."""

from __future__ import annotations

import time

import pytest
from prometheus_client import generate_latest
from redis.exceptions import ConnectionError as RedisConnectionError
from structlog.testing import capture_logs

from app.observability.events import SecurityEvents
from app.observability.metrics import Metrics
from app.observability.shared_store import SharedStoreHealth


def exposition(metrics: Metrics) -> str:
    return generate_latest(metrics.registry).decode()


def test_a_failure_skips_the_store_until_the_retry_time(monkeypatch: pytest.MonkeyPatch) -> None:
    metrics = Metrics(service_version="t", commit="t", shared_store=True)
    health = SharedStoreHealth(SecurityEvents(metrics), retry_seconds=5.0)
    now = [1000.0]
    monkeypatch.setattr(time, "monotonic", lambda: now[0])
    assert health.usable  # unknown until the first answer (the probe's, at start-up): worth trying

    health.succeeded()
    assert "user_service_shared_store_up 1.0" in exposition(metrics)
    health.failed("rate_limit", RedisConnectionError("refused"))
    health.failed("login_throttle", RedisConnectionError("refused"))
    health.failed(None, RedisConnectionError("refused"))  # the probe: not a fallback operation
    assert not health.usable
    text = exposition(metrics)
    assert "user_service_shared_store_up 0.0" in text
    assert 'user_service_shared_store_errors_total{store="rate_limit"} 1.0' in text
    assert 'user_service_shared_store_errors_total{store="login_throttle"} 1.0' in text

    now[0] += 5.0
    assert health.usable  # worth one more try
    health.succeeded()
    assert health.usable
    assert "user_service_shared_store_up 1.0" in exposition(metrics)


def test_without_a_shared_store_there_is_no_up_series() -> None:
    """An unlabelled gauge would be exported at 0 from the start: read as "Redis down",
    UserServiceSharedStoreDown would fire on every service without Redis."""
    metrics = Metrics(service_version="t", commit="t")
    SharedStoreHealth(SecurityEvents(metrics)).failed("rate_limit", RedisConnectionError("refused"))
    assert "user_service_shared_store_up" not in exposition(metrics)


def test_the_outage_is_logged_once_and_the_recovery_too() -> None:
    health = SharedStoreHealth(SecurityEvents(None))
    with capture_logs() as logs:
        health.succeeded()
        for _ in range(3):
            health.failed("rate_limit", RedisConnectionError("refused"))
        health.succeeded()
        health.succeeded()
    events = [entry["event"] for entry in logs]
    assert events == ["shared_store_unavailable", "shared_store_recovered"]
    assert logs[0]["store"] == "rate_limit"
    assert logs[0]["error"] == "ConnectionError"
