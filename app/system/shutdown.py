"""Graceful shutdown on SIGTERM, in the order Kubernetes needs it.

1. At once: readiness answers 503, so the endpoint is taken out of the Service.
2. For ``drain_seconds`` the server keeps accepting and serving: kube-proxies and ingress
   controllers learn of the removal a little later, and requests they still send must not
   meet a closed port.
3. Then the signal goes on to uvicorn, which stops accepting, lets in-flight requests finish
   (``--timeout-graceful-shutdown``) and runs the lifespan shutdown.
A second SIGTERM skips the rest of the drain.
"""

from __future__ import annotations

import asyncio
import os
import signal
import threading
from collections.abc import Callable
from types import FrameType
from typing import Any

from app.observability.logging import get_logger
from app.system.health import Lifecycle

_log = get_logger("user_service.lifecycle")


def _pass_on(previous: Any, signum: int, frame: FrameType | None) -> None:
    if callable(previous):
        previous(signum, frame)
    elif previous == signal.SIG_DFL:
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)


def drain_on_sigterm(lifecycle: Lifecycle, drain_seconds: float) -> Callable[[], None]:
    """Install the handler; returns the function that puts the previous one back."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None  # signals only reach the main thread; an embedded server has no say
    loop = asyncio.get_running_loop()
    previous = signal.getsignal(signal.SIGTERM)

    def on_sigterm(signum: int, frame: FrameType | None) -> None:
        # Python runs this between two bytecodes of the main thread, which may be inside
        # the logger holding its lock: a log call here deadlocked the process (a stop that
        # hung until SIGKILL, no drain). Only the flag is set here; the rest runs on the loop.
        if lifecycle.draining:
            _pass_on(previous, signum, frame)
            return
        lifecycle.draining = True
        loop.call_soon_threadsafe(begin_drain, signum, frame)

    def begin_drain(signum: int, frame: FrameType | None) -> None:
        _log.info("shutdown_started", drain_seconds=drain_seconds)
        loop.call_later(drain_seconds, _pass_on, previous, signum, frame)

    signal.signal(signal.SIGTERM, on_sigterm)

    def restore() -> None:
        if signal.getsignal(signal.SIGTERM) is on_sigterm:
            signal.signal(signal.SIGTERM, previous)

    return restore
