"""Each load-test request as the parent span of the service's own server span.

Locust's ``--otel`` sets up an OpenTelemetry tracer provider and instruments ``requests``
and ``urllib3``, the clients of ``HttpUser``; the scenarios use ``FastHttpUser``
(geventhttpclient), which it does not instrument. This module does: when a tracer provider
of the SDK is active, every request of a scenario user runs inside a CLIENT span named
like Locust's statistics ("POST /api/v1/auth/login"), whose context goes to the service in
the W3C ``traceparent`` header, so one trace holds the client's view (queueing in the load
generator included) and the service's.

Without ``--otel`` (or where OpenTelemetry is not installed, as in an image of Locust
without its ``otel`` extra) nothing is wrapped and a request costs what it did.
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Callable
from typing import Any

# OpenTelemetry is imported by name at run time: it is optional here (Locust's otel
# extra), and the locustfile must also load in an image without it.
_MODULES = ("opentelemetry.trace", "opentelemetry.propagate", "opentelemetry.sdk.trace")


def _tracing() -> tuple[Any, Any] | None:
    """(tracer, propagate) when an SDK tracer provider is active, else None."""
    try:
        trace, propagate, sdk_trace = (importlib.import_module(name) for name in _MODULES)
    except ImportError:
        return None
    if not isinstance(trace.get_tracer_provider(), sdk_trace.TracerProvider):
        return None  # the API's no-op provider: --otel is off
    return trace.get_tracer("loadtests"), propagate


def instrument(client: Any) -> bool:
    """Wrap ``client.request`` (a FastHttpSession) in client spans; True if it did."""
    tracing = _tracing()
    if tracing is None:
        return False
    tracer, propagate = tracing
    trace = importlib.import_module("opentelemetry.trace")
    original: Callable[..., Any] = client.request

    @functools.wraps(original)
    def request(
        method: str, url: str, name: str | None = None, headers: dict[str, str] | None = None, **kwargs: Any
    ) -> Any:
        span_name = f"{method} {name or url}"
        attributes = {"http.request.method": method, "url.path": url}
        with tracer.start_as_current_span(span_name, kind=trace.SpanKind.CLIENT, attributes=attributes) as span:
            carrier = dict(headers or {})
            propagate.inject(carrier)
            response = original(method, url, name=name, headers=carrier, **kwargs)
            status = getattr(response, "status_code", None)
            if status:
                span.set_attribute("http.response.status_code", status)
                if status >= 500:
                    span.set_status(trace.Status(trace.StatusCode.ERROR))
            return response

    client.request = request
    return True
