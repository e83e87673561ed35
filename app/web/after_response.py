"""Work a request leaves for after its response: it runs once the response has been sent
and outside the HTTP telemetry, so neither the answer's timing nor its span or duration
histogram can tell whether there was any. Used where that timing would be an oracle: the
part of a password-reset request that depends on whether the address has an account, and
the audit row of a failed login of a known account.

The outermost layer of the HTTP chain runs the work after the app returns (uvicorn has
sent the response and serves the connection's next request meanwhile; its graceful
shutdown waits for it). The work runs in the request's trace context, so what it writes
(an outbox row's traceparent) still links to the request's trace. A failure is logged:
the client has its answer."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from contextvars import ContextVar

from litestar.enums import ScopeType
from litestar.types import ASGIApp, Receive, Scope, Send
from opentelemetry import context as otel_context

from app.observability.logging import get_logger

Work = Callable[[], Awaitable[None]]

_log = get_logger("user_service.http")
_pending: ContextVar[list[tuple[Work, otel_context.Context]] | None] = ContextVar("after_response", default=None)


def after_response(work: Work) -> bool:
    """Run ``work`` after this request's response; False outside a request (the caller
    then does it at once)."""
    pending = _pending.get()
    if pending is None:
        return False
    pending.append((work, otel_context.get_current()))
    return True


def running_work_after_response(app: ASGIApp) -> ASGIApp:
    async def deferring(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != ScopeType.HTTP:
            await app(scope, receive, send)
            return
        pending: list[tuple[Work, otel_context.Context]] = []
        token = _pending.set(pending)
        try:
            await app(scope, receive, send)
        finally:
            _pending.reset(token)
            for work, trace_context in pending:
                attached = otel_context.attach(trace_context)
                try:
                    await work()
                except Exception as exc:  # noqa: BLE001 - the client has its answer; the operator gets the log
                    _log.error("after_response_failed", error=type(exc).__name__, exc_info=exc)
                finally:
                    otel_context.detach(attached)

    return deferring
