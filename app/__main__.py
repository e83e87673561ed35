"""``python -m app``: the production entry point (uvicorn with httptools on the event loop
that ``SERVER__EVENT_LOOP`` names, plus a header timeout and a concurrency cap:
app/web/connections.py).

With more than one worker it switches prometheus-client to multiprocess mode: the
metrics folder is emptied *before* any worker starts (stale files from a previous run
would resurrect old counts), and every worker writes its values there.
"""

from __future__ import annotations

import functools
import os
import shutil
import sys

import uvicorn
from uvicorn.supervisors import Multiprocess

from app.settings import Settings
from app.web.connections import GuardedHttpToolsProtocol

# uvicorn's exit status for a server that never started (its run() uses the same).
STARTUP_FAILURE = 3


def prepare_metrics_dir(settings: Settings) -> None:
    if settings.server.workers <= 1 and "PROMETHEUS_MULTIPROC_DIR" not in os.environ:
        return
    directory = os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", str(settings.server.metrics_dir))
    shutil.rmtree(directory, ignore_errors=True)
    os.makedirs(directory, exist_ok=True)


def uvicorn_config(settings: Settings, port: int) -> uvicorn.Config:
    return uvicorn.Config(
        "app.main:create_app",
        factory=True,
        host=settings.server.host,
        port=port,
        workers=settings.server.workers,
        loop=settings.server.event_loop,
        # uvicorn accepts a protocol class here; a partial of one carries our two limits.
        http=functools.partial(  # type: ignore[arg-type]
            GuardedHttpToolsProtocol,
            header_timeout_seconds=settings.server.header_timeout_seconds,
            max_concurrent_connections=settings.server.max_concurrent_connections,
        ),
        timeout_keep_alive=settings.server.keep_alive_seconds,
        timeout_graceful_shutdown=settings.server.graceful_timeout_seconds,
        # Our own access line replaces uvicorn's; logging is configured by the app.
        access_log=False,
        log_config=None,
        proxy_headers=False,
        server_header=False,
    )


def main() -> None:
    settings = Settings()
    prepare_metrics_dir(settings)
    config = uvicorn_config(settings, settings.server.port)
    # uvicorn binds one port by itself; with the proxy's port beside it, both sockets are
    # bound here and every worker serves both (which port a request came in on is in its
    # scope: app/web/client_address.py).
    sockets = [config.bind_socket()]
    if settings.server.proxy_port is not None:
        sockets.append(uvicorn_config(settings, settings.server.proxy_port).bind_socket())
    server = uvicorn.Server(config)
    if config.workers > 1:
        Multiprocess(config, sockets=sockets).run()
        return
    server.run(sockets=sockets)
    if not server.started:
        sys.exit(STARTUP_FAILURE)


if __name__ == "__main__":
    main()
