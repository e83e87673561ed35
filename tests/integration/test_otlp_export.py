"""Spans leave a real server process over OTLP/HTTP and arrive with the configured service name."""

from __future__ import annotations

import time
from collections.abc import Callable

import httpx
import pytest

from testkit.otlp_receiver import otlp_receiver
from testkit.server_process import CLEAN_EXIT, ServerProcess

PASSWORD = "juniper-socket-64-harvest"


@pytest.mark.slow
def test_spans_arrive_at_an_otlp_receiver(server_process: Callable[..., ServerProcess]) -> None:
    with otlp_receiver() as receiver:
        server = server_process(
            OTEL_EXPORTER_OTLP_ENDPOINT=receiver.endpoint,
            OTEL_SERVICE_NAME="user-service-under-test",
            OTEL_BSP_SCHEDULE_DELAY="100",
        ).start()
        try:
            body = {"username": "exported", "email": "exported@example.com", "password": PASSWORD}
            assert httpx.post(f"{server.base_url}/api/v1/auth/register", json=body).status_code == 201
            login = {"username": "exported", "password": PASSWORD}
            assert httpx.post(f"{server.base_url}/api/v1/auth/login", json=login).status_code == 200
            deadline = time.monotonic() + 20
            while (
                time.monotonic() < deadline and ("user-service-under-test", "password verify") not in receiver.spans()
            ):
                time.sleep(0.1)
        finally:
            assert server.stop() in CLEAN_EXIT, server.output
    spans = receiver.spans()
    assert {service for service, _ in spans} == {"user-service-under-test"}
    names = {name for _, name in spans}
    assert {"POST /api/v1/auth/register", "POST /api/v1/auth/login", "password hash", "password verify"} <= names
    assert any(name.startswith(("SELECT", "INSERT")) for name in names)
