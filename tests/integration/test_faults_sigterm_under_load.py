"""A fault on the real process (``python -m app`` on PostgreSQL), with what a client sees:
SIGTERM in the middle of a registration load: every 201 has its row and every row its
201; what comes after the drain is refused, never acknowledged and lost."""

from __future__ import annotations

import asyncio
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from testkit.server_process import CLEAN_EXIT, ServerProcess
from tests.integration.faults import REGISTER, UNTHROTTLED, register_body


@dataclass
class Attempt:
    username: str
    sent: float
    outcome: int | str  # the status, or the transport error's class name


def _register_until(base: str, prefix: str, stop: threading.Event) -> list[Attempt]:
    attempts: list[Attempt] = []
    refused_in_a_row = 0
    # A new connection for every request: a refused connect then proves the request was
    # never received (a reused keep-alive connection could die with the request unread).
    limits = httpx.Limits(max_keepalive_connections=0)
    with httpx.Client(base_url=base, timeout=60, limits=limits) as client:
        for i in range(100_000):
            if stop.is_set() or refused_in_a_row >= 3:
                break
            username = f"{prefix}_{i}"
            sent = time.monotonic()
            try:
                outcome: int | str = client.post(REGISTER, json=register_body(username)).status_code
                refused_in_a_row = 0
            except httpx.TransportError as exc:
                outcome = type(exc).__name__
                refused_in_a_row += isinstance(exc, httpx.ConnectError)
                time.sleep(0.05)
            attempts.append(Attempt(username, sent, outcome))
    return attempts


@pytest.mark.slow
def test_sigterm_during_a_registration_load_loses_no_committed_registration(
    server_process: Callable[..., ServerProcess], clean_database: str
) -> None:
    server = server_process(
        USER_SERVICE_HTTP__DRAIN_SECONDS="1",
        USER_SERVICE_SERVER__GRACEFUL_TIMEOUT_SECONDS="10",
        # A few milliseconds of argon2 per registration, so that requests are inside the
        # service (hashing, inserting) at every moment of the shutdown.
        USER_SERVICE_PASSWORDS__TIME_COST="1",
        USER_SERVICE_PASSWORDS__MEMORY_COST_KIB="4096",
        **UNTHROTTLED,
    ).start()
    stop = threading.Event()
    clients = 8
    with ThreadPoolExecutor(max_workers=clients) as pool:
        load: list[Future[list[Attempt]]] = [
            pool.submit(_register_until, server.base_url, f"load{n}", stop) for n in range(clients)
        ]
        time.sleep(1.5)
        sigterm_at = time.monotonic()
        server.signal(signal.SIGTERM)
        try:
            exit_code = server.wait(timeout=60)
        finally:
            stop.set()
            server.kill()
        exited_at = time.monotonic()
        attempts = [attempt for future in load for attempt in future.result()]
    assert exit_code in CLEAN_EXIT, server.output

    rows = set(asyncio.run(_usernames(clean_database)))
    created = {a.username for a in attempts if a.outcome == 201}
    outcomes = {a.outcome for a in attempts}
    ambiguous = {a.username for a in attempts if isinstance(a.outcome, str) and a.outcome != "ConnectError"}
    assert {o for o in outcomes if isinstance(o, int)} <= {201, 503}, outcomes
    # Nothing acknowledged was lost, nothing refused was stored.
    assert created - rows == set(), f"201 without a row: {sorted(created - rows)[:10]}"
    assert rows - created <= ambiguous, f"rows without a 201: {sorted(rows - created - ambiguous)[:10]}"
    # The load really spanned the shutdown: acknowledged during the drain, refused after.
    assert any(a.outcome == 201 and a.sent > sigterm_at for a in attempts), "nothing was served during the drain"
    assert any(a.outcome == "ConnectError" for a in attempts), "nothing was refused after the drain"
    assert not any(a.outcome == 201 and a.sent > exited_at for a in attempts)
    late = [a for a in attempts if a.sent > sigterm_at]
    print(  # noqa: T201 - the measurements docs/fuzzing-and-faults.md reports (-s shows them)
        f"\nSIGTERM under load: {len(attempts)} registrations from {clients} clients, {len(created)} x 201 = "
        f"{len(rows)} rows; after the signal {sum(a.outcome == 201 for a in late)} x 201 (drain), "
        f"{sum(a.outcome == 503 for a in late)} x 503, "
        f"{sorted(Counter(a.outcome for a in late if isinstance(a.outcome, str)).items())} transport errors; "
        f"exit {exit_code} {exited_at - sigterm_at:.1f} s after SIGTERM"
    )


async def _usernames(url: str) -> list[str]:
    engine = create_async_engine(url)
    async with engine.connect() as conn:
        names = (await conn.execute(text("SELECT username FROM users WHERE username LIKE 'load%'"))).scalars().all()
    await engine.dispose()
    return list(names)
