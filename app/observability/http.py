"""Per-request telemetry at the outermost edge: RED metrics by route template, requests in
flight, one access log line, and the server span named after the route.

It wraps the whole application (routing and error handling included), so 404s, 405s and
413s are measured as well; their route is "unmatched" when no route template applies.
"""

from __future__ import annotations

import functools
import time
from typing import Any

from litestar.enums import ScopeType
from litestar.types import ASGIApp, Message, Receive, Scope, Send
from opentelemetry import trace

from app.observability.logging import get_logger
from app.observability.metrics import Metrics
from app.observability.request_id import request_id_of

# OpenTelemetry HTTP semantic conventions: any other method is reported as "_OTHER",
# so a client cannot mint label values.
KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"})
UNMATCHED_ROUTE = "unmatched"
# Scrapes are not traffic: counting them would make every dashboard show the scraper.
UNMEASURED_PATHS = frozenset({"/metrics"})
# Enough for any real client's User-Agent; a longer one is cut, not logged whole.
USER_AGENT_MAX_CHARS = 256
# OpenTelemetry's error.type, kept to a bounded set: an answered 5xx is its status code; an
# exception that escaped every handler is its class when it is one of these (a client gone,
# a server shutting down), and "_OTHER" otherwise. A class name taken as it comes would let
# any library's exception mint a label value. The access line's log names the class anyway.
KNOWN_ESCAPES = frozenset({"CancelledError", "ClientDisconnect", "TimeoutError", "ConnectionResetError"})
OTHER_ERROR_TYPE = "_OTHER"

_access = get_logger("user_service.access")


class HttpTelemetry:
    def __init__(self, metrics: Metrics | None) -> None:
        self._metrics = metrics

    def around(self, app: ASGIApp) -> ASGIApp:
        """This telemetry as a layer of the outer chain around ``app`` (a partial, not a
        wrapper coroutine: no extra frame per request)."""
        return functools.partial(self, app=app)

    async def __call__(self, scope: Scope, receive: Receive, send: Send, app: ASGIApp) -> None:
        if scope["type"] != ScopeType.HTTP or scope["path"] in UNMEASURED_PATHS:
            await app(scope, receive, send)
            return
        raw_method = str(scope.get("method", ""))
        method = raw_method if raw_method in KNOWN_METHODS else "_OTHER"
        request_id = request_id_of(scope)
        seen: dict[str, Any] = {"status": 500}
        started = time.perf_counter()
        if self._metrics:
            self._metrics.http_active.labels(http_request_method=method).inc()

        async def observing_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                seen["status"] = message["status"]
                # Still inside the server span (the tracing middleware sends from within
                # it): take its ids and give it the route template for a name.
                span = trace.get_current_span()
                context = span.get_span_context()
                if context.is_valid:
                    seen["trace_id"] = trace.format_trace_id(context.trace_id)
                    seen["span_id"] = trace.format_span_id(context.span_id)
                    if template := scope.get("path_template"):
                        span.update_name(f"{method} {template}")
                        span.set_attribute("http.route", template)
                    if method == "HEAD":
                        # The tracing inside Litestar saw the GET that app/web/head.py
                        # handed it: name and method say what the client sent.
                        span.update_name(f"HEAD {template or scope['path']}")
                        span.set_attribute("http.method", "HEAD")
            await send(message)

        try:
            await app(scope, receive, observing_send)
        except BaseException as exc:
            escaped = type(exc).__qualname__
            seen["escaped"] = escaped
            seen["error_type"] = escaped if escaped in KNOWN_ESCAPES else OTHER_ERROR_TYPE
            raise
        finally:
            duration = time.perf_counter() - started
            self._record(scope, method, request_id, duration, seen)

    def _record(self, scope: Scope, method: str, request_id: str, duration: float, seen: dict[str, Any]) -> None:
        status: int = seen["status"]
        route = scope.get("path_template") or UNMATCHED_ROUTE
        if self._metrics:
            metrics = self._metrics
            metrics.http_active.labels(http_request_method=method).dec()
            exemplar = {"trace_id": seen["trace_id"]} if "trace_id" in seen and not metrics.multiprocess else None
            metrics.http_duration.labels(
                http_request_method=method, http_route=route, http_response_status_code=str(status)
            ).observe(duration, exemplar)
            if status >= 500 or "error_type" in seen:
                error_type = seen.get("error_type") or str(status)
                metrics.http_errors.labels(http_request_method=method, http_route=route, error_type=error_type).inc()
        user = scope.get("user")
        log = _access.error if status >= 500 else _access.info
        log(
            "request",
            http_method=method,
            http_route=route,
            http_status=status,
            duration_ms=round(duration * 1000, 2),
            request_id=request_id,
            user_id=str(user.id) if user is not None and hasattr(user, "id") else None,
            # Who, as the trusted-proxy layer above resolved it, and with which client: "which
            # client version?" is answerable from the log.
            client_address=client[0] if (client := scope.get("client")) else None,
            user_agent=_user_agent(scope),
            trace_id=seen.get("trace_id"),
            span_id=seen.get("span_id"),
            **({"exception": seen["escaped"]} if "escaped" in seen else {}),
        )


def _user_agent(scope: Scope) -> str | None:
    for name, value in scope.get("headers", ()):
        if name == b"user-agent":
            return bytes(value[:USER_AGENT_MAX_CHARS]).decode("latin-1")
    return None
