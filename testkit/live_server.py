"""Serve an app with uvicorn on 127.0.0.1 inside the test's own event loop.

Litestar 2's AsyncTestClient runs the app through a blocking portal, so requests
sent "concurrently" through it are in fact serialised and the test's loop stalls
while each one runs. A real server gives real HTTP, real concurrency, and an
event loop shared with the test (which is what the loop-lag probe measures).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator

import httpx
import uvicorn
from litestar import Litestar

STARTUP_TIMEOUT_SECONDS = 30.0


class LiveClient(httpx.AsyncClient):
    """An httpx client bound to one running app, which tests may inspect (``container_of(client.app)``)."""

    def __init__(self, app: Litestar, base_url: str) -> None:
        super().__init__(base_url=base_url, timeout=60.0)
        self.app = app


@contextlib.asynccontextmanager
async def serve(app: Litestar) -> AsyncIterator[LiveClient]:
    # IPPROTO_TCP named, not left 0: asyncio sets TCP_NODELAY on accepted connections only
    # when the listening socket says TCP. Without it uvicorn's headers and body go out in two
    # writes under Nagle's algorithm, and every response waited for the client's delayed ACK
    # (a 40 ms floor, or none when the kernel happened to be in quick-ack mode).
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    # log_config=None, as in production (python -m app): the app's logging stays in charge.
    # proxy_headers=False as in `python -m app`: the app decides whom to believe (trusted_proxies).
    config = uvicorn.Config(
        app, lifespan="on", log_config=None, access_log=False, timeout_graceful_shutdown=5, proxy_headers=False
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        async with asyncio.timeout(STARTUP_TIMEOUT_SECONDS):
            while not server.started:
                if task.done():
                    task.result()  # start-up failed: raise its error here
                    raise RuntimeError("server stopped during start-up")
                await asyncio.sleep(0.01)
        async with LiveClient(app, f"http://127.0.0.1:{port}") as client:
            yield client
    finally:
        server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError):
            await task
        sock.close()
