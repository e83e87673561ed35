"""Both event loops ``SERVER__EVENT_LOOP`` offers answer without the 40 ms stall of Nagle's
algorithm meeting a delayed ACK, with one worker and with several (uvicorn binds the
socket itself for several, and asyncio then leaves TCP_NODELAY off unless we set it)."""

from __future__ import annotations

import socket
import statistics
import time
from collections.abc import Callable

import pytest

from testkit.server_process import ServerProcess

# A response from a local process takes a few milliseconds even under the coverage tracer;
# the stall adds 40 ms to every response, so a median above this is the stall.
STALL_SECONDS = 0.035


def round_trips(port: int, count: int = 20) -> list[float]:
    """Sequential GETs over one kept-alive connection, timed from the first byte sent to
    the last byte of the body. The client sends without delay itself."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        times = []
        for _ in range(count):
            started = time.perf_counter()
            sock.sendall(b"GET /health/live HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            received = b""
            while b"\r\n\r\n" not in received:
                received += sock.recv(65536)
            head, _, body = received.partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 200"), head
            length = next(
                int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")
            )
            while len(body) < length:
                body += sock.recv(65536)
            times.append(time.perf_counter() - started)
        return times


@pytest.mark.parametrize("workers", ["1", "2"])
@pytest.mark.parametrize("event_loop", ["asyncio", "uvloop"])
def test_responses_are_sent_without_waiting_for_an_ack(
    server_process: Callable[..., ServerProcess], event_loop: str, workers: str
) -> None:
    server = server_process(USER_SERVICE_SERVER__EVENT_LOOP=event_loop, USER_SERVICE_SERVER__WORKERS=workers)
    server.start()
    try:
        round_trips(server.port, 5)  # warm: the first requests of a worker compile and connect
        median = statistics.median(round_trips(server.port))
    finally:
        server.stop()
    assert median < STALL_SECONDS, f"median round trip {median * 1000:.1f} ms on {event_loop} with {workers} worker(s)"
