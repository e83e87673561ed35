"""The SIGTERM handler does nothing in the signal's context but set the draining flag:
Python runs a handler between two bytecodes of the main thread, which may be inside the
logger holding its lock, and the handler's own log call then deadlocked the process (found
as a stop that hung until SIGKILL)."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Iterator
from types import FrameType

import pytest
from structlog.testing import capture_logs

from app.system.health import Lifecycle
from app.system.shutdown import drain_on_sigterm


@pytest.fixture
def passed_on() -> Iterator[list[int]]:
    """What reaches the handler that was there before (uvicorn's, in the service)."""
    received: list[int] = []

    def previous(signum: int, frame: FrameType | None) -> None:
        received.append(signum)

    original = signal.signal(signal.SIGTERM, previous)
    yield received
    signal.signal(signal.SIGTERM, original)


async def test_the_handler_only_flags_and_the_loop_logs_and_passes_the_signal_on(passed_on: list[int]) -> None:
    lifecycle = Lifecycle()
    restore = drain_on_sigterm(lifecycle, drain_seconds=0.05)
    handler = signal.getsignal(signal.SIGTERM)
    assert callable(handler)
    try:
        with capture_logs() as logs:
            handler(signal.SIGTERM, None)  # as Python calls it, in the middle of whatever ran
            assert lifecycle.draining, "readiness fails at once"
            assert logs == [], "nothing that takes a lock runs in the signal's context"
            assert passed_on == []
            await asyncio.sleep(0.01)
            assert [entry["event"] for entry in logs] == ["shutdown_started"]
            assert passed_on == [], "the drain is still running"
            await asyncio.sleep(0.1)
        assert passed_on == [signal.SIGTERM], "after the drain the server is told"
    finally:
        restore()


async def test_a_second_sigterm_skips_the_drain(passed_on: list[int]) -> None:
    lifecycle = Lifecycle()
    restore = drain_on_sigterm(lifecycle, drain_seconds=60)
    handler = signal.getsignal(signal.SIGTERM)
    assert callable(handler)
    try:
        handler(signal.SIGTERM, None)
        handler(signal.SIGTERM, None)
        assert passed_on == [signal.SIGTERM]
    finally:
        restore()
