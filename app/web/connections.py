"""uvicorn's HTTP protocol with the two connection limits uvicorn lacks, for ``python -m app``.

- **Header timeout.** uvicorn closes a keep-alive connection only after a response, and
  every received byte cancels that timer; a connection that never completes its first
  request's headers (a silent socket, or a slowloris client sending one header byte every
  few seconds) is never closed. Here a request's headers must be complete within
  ``header_timeout_seconds`` of the connection opening or of the previous response, however
  the bytes trickle in; else the connection is closed without an answer (as nginx's
  ``client_header_timeout`` and Go's ``ReadHeaderTimeout`` do). The body is not timed: a
  body is read only by a handler, bounded by the body-size limit, and the proxy in front
  times it (README, "Security").
- **Concurrency cap.** uvicorn's ``limit_concurrency`` answers the excess with a
  ``text/plain`` 503, outside the API's problem-details contract. The same check runs here
  (open connections or requests in flight above ``max_concurrent_connections``) and the
  excess gets a problem document with ``Retry-After`` and ``Connection: close``, through the
  request-id and security-header layers like every other answer.

ASGI middleware cannot do either: it runs only once uvicorn has parsed a request's headers.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from asyncio import TimerHandle
from typing import Any

from litestar.types import ASGIApp, Receive, Scope, Send
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from app.observability.request_id import with_request_id
from app.web.headers import with_response_headers
from app.web.problems import problem_bytes, send_problem

_BUSY_BODY = problem_bytes(
    status=503,
    kind="server-busy",
    title="Server busy",
    detail="The server has as many connections as it accepts; retry shortly.",
)


async def _answer_busy(scope: Scope, receive: Receive, send: Send) -> None:
    # uvicorn ends the connection after this response: it frees a slot.
    await send_problem(send, 503, _BUSY_BODY, (b"retry-after", b"1"), (b"connection", b"close"))


# HSTS is left off this one answer: it is a per-connection refusal, and the next real
# response over HTTPS carries the header again.
busy_answer: ASGIApp = with_request_id(with_response_headers(_answer_busy, hsts_seconds=0))


def _send_without_delay(transport: asyncio.Transport) -> None:
    """TCP_NODELAY on the connection. uvicorn writes a response's headers and body in two
    writes; under Nagle's algorithm the second waits for the client's delayed ACK, 40 ms on
    Linux. uvloop sets the option on every TCP connection, asyncio only when the listening
    socket says IPPROTO_TCP, which the socket uvicorn binds for several workers does not."""
    sock = transport.get_extra_info("socket")
    if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a header timeout and a problem-details concurrency cap.

    ``python -m app`` passes it to uvicorn as ``functools.partial(GuardedHttpToolsProtocol,
    header_timeout_seconds=..., max_concurrent_connections=...)``: a partial of a module-level
    class survives the pickling that uvicorn's worker processes need."""

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
        *,
        header_timeout_seconds: float,
        max_concurrent_connections: int,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self.header_timeout_seconds = header_timeout_seconds
        self.max_concurrent_connections = max_concurrent_connections
        # uvicorn's own check would answer text/plain first; ours replaces it.
        self.limit_concurrency = None
        self.service = self.app
        self.header_deadline: TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        _send_without_delay(transport)
        super().connection_made(transport)
        self._arm_header_deadline()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_header_deadline()
        super().connection_lost(exc)

    def on_headers_complete(self) -> None:
        self._disarm_header_deadline()
        # This connection is in ``connections`` already, hence ">" (uvicorn's ">=" would
        # refuse the cap-th connection itself).
        over_cap = (
            len(self.connections) > self.max_concurrent_connections
            or len(self.tasks) >= self.max_concurrent_connections
        )
        # uvicorn reads ``self.app`` right here to choose what serves this request.
        self.app = busy_answer if over_cap else self.service
        super().on_headers_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        # Waiting for the next request on a kept-alive connection: its headers are timed too
        # (uvicorn's keep-alive timer stops at the first byte). A pipelined request that is
        # already parsed has its headers complete.
        if not self.transport.is_closing() and not self.pipeline:
            self._arm_header_deadline()

    def _arm_header_deadline(self) -> None:
        self._disarm_header_deadline()
        self.header_deadline = self.loop.call_later(self.header_timeout_seconds, self._headers_too_slow)

    def _disarm_header_deadline(self) -> None:
        if self.header_deadline is not None:
            self.header_deadline.cancel()
            self.header_deadline = None

    def _headers_too_slow(self) -> None:
        self.header_deadline = None
        if not self.transport.is_closing():
            self.transport.close()
