"""GET /metrics: Prometheus text, or OpenMetrics with exemplars when the scraper asks for it.

Not behind authentication (Prometheus scrapes it from inside the cluster) and therefore
never routed by the public ingress or nginx. Served either as a route of the app (the
default) or, with ``USER_SERVICE_METRICS__PORT`` set, only by ``MetricsListener`` on a port
of its own, so that the service port cannot give it away whatever routes to it.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket

from litestar import Request, Response, get
from litestar.datastructures import State
from litestar.di import NamedDependency

from app.observability.logging import get_logger
from app.observability.metrics import Metrics

logger = get_logger("user_service.metrics")


@get("/metrics", exclude_from_auth=True, include_in_schema=False, sync_to_thread=False)
def metrics_endpoint(request: Request[object, object, State], metrics: NamedDependency[Metrics]) -> Response[bytes]:
    exposition = metrics.expose(request.headers.get("accept", ""))
    # Litestar appends "; charset=utf-8" to every text/ type itself: the client's one, not
    # twice ("text/plain; version=0.0.4; charset=utf-8; charset=utf-8").
    media_type = exposition.content_type
    if media_type.startswith("text/"):
        media_type = "; ".join(part for part in media_type.split("; ") if not part.startswith("charset="))
    return Response(exposition.body, media_type=media_type)


# A scrape request is a request line and a handful of headers; anything slower or larger
# is not Prometheus, and is cut rather than allowed to hold a connection open.
READ_TIMEOUT_SECONDS = 5.0
MAX_REQUEST_HEAD_BYTES = 8192


class MetricsListener:
    """A minimal HTTP/1.x server in the app's event loop that answers ``GET /metrics``
    (and HEAD) and 404 to everything else, one request per connection.

    Why not prometheus-client's ``start_http_server``: it binds without SO_REUSEPORT, so
    with ``USER_SERVICE_SERVER__WORKERS`` > 1 the second worker could not bind the port,
    and its thread per connection has no read timeout. Here every worker binds the port
    with SO_REUSEPORT and the kernel hands each scrape to one of them; in multiprocess mode
    any worker answers with the sum over all of them (``Metrics.expose``), exactly as the
    route does on the service port. Started and stopped by the lifespan.
    """

    def __init__(self, metrics: Metrics, host: str, port: int) -> None:
        self._metrics = metrics
        self.host = host
        self.port = port
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        reuse_port = hasattr(socket, "SO_REUSEPORT")
        self._server = await asyncio.start_server(
            self._serve, self.host, self.port, reuse_address=True, reuse_port=reuse_port, limit=MAX_REQUEST_HEAD_BYTES
        )
        logger.info("metrics_listener_started", host=self.host, port=self.port)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(READ_TIMEOUT_SECONDS):
                head = await reader.readuntil(b"\r\n\r\n")
            await self._answer(writer, head)
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            pass  # a slow, oversized or vanished client: nothing to answer
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    async def _answer(self, writer: asyncio.StreamWriter, head: bytes) -> None:
        request_line, *header_lines = head.decode("latin-1").split("\r\n")
        parts = request_line.split(" ")
        if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
            writer.write(_response(400, b"bad request\n", "text/plain; charset=utf-8"))
            return
        method, target, _ = parts
        path = target.split("?", 1)[0]
        if path != "/metrics":
            status, body, content_type = 404, b"not found\n", "text/plain; charset=utf-8"
        elif method not in ("GET", "HEAD"):
            status, body, content_type = 405, b"method not allowed\n", "text/plain; charset=utf-8"
        else:
            accept = next(
                (line.split(":", 1)[1].strip() for line in header_lines if line.lower().startswith("accept:")), ""
            )
            exposition = self._metrics.expose(accept)
            status, body, content_type = 200, exposition.body, exposition.content_type
        writer.write(_response(status, b"" if method == "HEAD" else body, content_type, length=len(body)))
        await writer.drain()


_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed"}


def _response(status: int, body: bytes, content_type: str, *, length: int | None = None) -> bytes:
    head = (
        f"HTTP/1.1 {status} {_REASONS[status]}\r\n"
        f"Content-Type: {content_type}\r\n"
        f"Content-Length: {len(body) if length is None else length}\r\n"
        "Cache-Control: no-store\r\n"
        "X-Content-Type-Options: nosniff\r\n"
        "Connection: close\r\n\r\n"
    )
    if status == 405:
        head = head.replace("\r\n\r\n", "\r\nAllow: GET, HEAD\r\n\r\n")
    return head.encode("latin-1") + body
