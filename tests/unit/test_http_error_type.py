"""The error type of a failed request is one of a bounded set (issue 20, point 8): an
answered 5xx is its status code; an exception that escaped every handler is its class only
when the class is a known one, and "_OTHER" otherwise, so no library's exception can mint a
new label value of http_server_errors_total."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from app.observability.http import HttpTelemetry
from app.observability.metrics import Metrics


class CustomLibraryError(Exception):
    pass


def _scope() -> dict[str, Any]:
    return {"type": "http", "path": "/api/v1/x", "method": "GET", "headers": [], "path_template": "/api/v1/x"}


async def _noop_receive() -> dict[str, Any]:
    return {"type": "http.request", "body": b""}


async def _noop_send(message: Any) -> None:
    return None


def _error_types(metrics: Metrics) -> dict[str, float]:
    return {
        sample.labels["error_type"]: sample.value
        for family in metrics.registry.collect()
        if family.name == "http_server_errors"
        for sample in family.samples
        if sample.name == "http_server_errors_total"
    }


@pytest.mark.parametrize(
    ("raised", "recorded"),
    [(CustomLibraryError("x"), "_OTHER"), (KeyError("x"), "_OTHER"), (asyncio.CancelledError(), "CancelledError")],
)
async def test_an_escaped_exception_is_a_known_class_or_other(raised: BaseException, recorded: str) -> None:
    metrics = Metrics(service_version="test", commit="test")

    async def failing_app(scope: Any, receive: Any, send: Any) -> None:
        raise raised

    with pytest.raises(type(raised)):
        await HttpTelemetry(metrics)(_scope(), _noop_receive, _noop_send, app=failing_app)  # type: ignore[arg-type]
    assert _error_types(metrics) == {recorded: 1.0}


async def test_an_answered_5xx_is_its_status_code() -> None:
    metrics = Metrics(service_version="test", commit="test")

    async def answering_503(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 503, "headers": []})
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    await HttpTelemetry(metrics)(_scope(), _noop_receive, _noop_send, app=answering_503)  # type: ignore[arg-type]
    assert _error_types(metrics) == {"503": 1.0}
