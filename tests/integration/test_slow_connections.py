"""``python -m app`` closes connections that hold a slot without sending a request: headers
trickled a byte at a time (slowloris), a socket opened and left silent, a keep-alive
connection left idle; and past its concurrency cap it answers 503 at once. Each on raw
sockets against the real server process, with a normal request alongside."""

from __future__ import annotations

import select
import socket
import time
from collections.abc import Callable, Iterator

import httpx
import pytest

from testkit.server_process import ServerProcess

pytestmark = pytest.mark.slow

HEADER_TIMEOUT = 2.0
KEEP_ALIVE = 1.0
# Timers fire on the event loop of a process that may share 2 cores with other tests.
MARGIN = 2.0


def _connect(server: ServerProcess) -> socket.socket:
    return socket.create_connection(("127.0.0.1", server.port), timeout=5)


def _is_closed(sock: socket.socket) -> bool:
    """Whether the server closed ``sock`` (EOF or reset); reads and drops anything it sent."""
    readable, _, _ = select.select([sock], [], [], 0)
    if not readable:
        return False
    try:
        return sock.recv(65536) == b""
    except OSError:  # reset by the server
        return True


def _trickle(sock: socket.socket, data: bytes) -> bool:
    """Send ``data``; False once the server has closed the connection."""
    try:
        sock.sendall(data)
    except OSError:
        return False
    return True


def _seconds_until_closed(
    sockets: dict[str, socket.socket], limit: float, every: Callable[[], None] | None = None
) -> dict[str, float]:
    """When each socket was closed by the server (seconds from now); ``every`` runs each
    0.2 s meanwhile. Sockets still open after ``limit`` are absent."""
    started = time.monotonic()
    closed: dict[str, float] = {}
    while len(closed) < len(sockets) and time.monotonic() - started < limit:
        if every is not None:
            every()
        for name, sock in sockets.items():
            if name not in closed and _is_closed(sock):
                closed[name] = time.monotonic() - started
        time.sleep(0.2)
    return closed


@pytest.fixture
def guarded_server(server_process: Callable[..., ServerProcess]) -> Iterator[ServerProcess]:
    server = server_process(
        USER_SERVICE_SERVER__HEADER_TIMEOUT_SECONDS=str(HEADER_TIMEOUT),
        USER_SERVICE_SERVER__KEEP_ALIVE_SECONDS=str(KEEP_ALIVE),
    ).start()
    yield server
    server.stop()


def test_slow_headers_and_silent_sockets_are_closed_while_requests_go_on(guarded_server: ServerProcess) -> None:
    sockets = {f"slow-{i}": _connect(guarded_server) for i in range(3)}
    for sock in sockets.values():
        sock.sendall(b"GET /health/live HTTP/1.1\r\nHost: 127.0.0.1\r\n")
    sockets["silent"] = _connect(guarded_server)
    header = iter(b"X-Slow: " + b"a" * 1000)

    def one_more_header_byte() -> None:
        byte = bytes([next(header)])
        for name, sock in sockets.items():
            if name.startswith("slow"):
                _trickle(sock, byte)

    try:
        closed = _seconds_until_closed(sockets, HEADER_TIMEOUT + MARGIN + 5, every=one_more_header_byte)
        # The server answered others while the slow ones were open.
        assert httpx.get(f"{guarded_server.base_url}/health/live", timeout=5).status_code == 200
    finally:
        for sock in sockets.values():
            sock.close()

    assert set(closed) == set(sockets), f"still open: {set(sockets) - set(closed)}"
    for name, seconds in closed.items():
        assert HEADER_TIMEOUT - 0.5 <= seconds <= HEADER_TIMEOUT + MARGIN, (name, seconds)


def test_headers_sent_in_time_are_answered_and_an_idle_keep_alive_connection_is_closed(
    guarded_server: ServerProcess,
) -> None:
    sock = _connect(guarded_server)
    try:
        # Slow but within the timeout: half of it spent on the headers.
        sock.sendall(b"GET /health/live HTTP/1.1\r\n")
        time.sleep(HEADER_TIMEOUT / 2)
        sock.sendall(b"Host: 127.0.0.1\r\n\r\n")
        sock.settimeout(5)
        assert sock.recv(65536).startswith(b"HTTP/1.1 200 ")

        closed = _seconds_until_closed({"idle": sock}, KEEP_ALIVE + MARGIN + 5)
    finally:
        sock.close()

    assert "idle" in closed, "an idle keep-alive connection must be closed"
    assert closed["idle"] <= KEEP_ALIVE + MARGIN


def test_connections_beyond_the_cap_get_503_problem_details_at_once(
    server_process: Callable[..., ServerProcess],
) -> None:
    cap = 3
    server = server_process(
        USER_SERVICE_SERVER__MAX_CONCURRENT_CONNECTIONS=str(cap),
        USER_SERVICE_SERVER__HEADER_TIMEOUT_SECONDS=str(HEADER_TIMEOUT),
    ).start()
    holders: list[socket.socket] = []
    try:
        holders = [_connect(server) for _ in range(cap)]
        time.sleep(0.2)  # the server has accepted them

        started = time.monotonic()
        response = httpx.get(f"{server.base_url}/health/live", timeout=5)
        assert time.monotonic() - started < 2.0, "the excess is answered at once, not queued"
        assert response.status_code == 503
        assert response.headers["content-type"].startswith("application/problem+json")
        assert response.headers["retry-after"] == "1"
        assert response.headers["connection"] == "close"
        assert response.headers["x-request-id"]
        assert response.json()["type"].endswith("/server-busy")

        # The holders are silent, so the header timeout frees their slots.
        time.sleep(HEADER_TIMEOUT + MARGIN)
        assert httpx.get(f"{server.base_url}/health/live", timeout=5).status_code == 200
    finally:
        for sock in holders:
            sock.close()
        server.stop()
