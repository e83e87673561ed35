"""Overload on the real process (``python -m app``, the production argon2 parameters and
pool): clients that retry at once and never honour Retry-After must not take the cores
from the logins that get through. Compared as a ratio within one run: successful logins
per second at 64 such connections against 8 (the pool's saturation), each a closed loop.

Before the edge shed (app/web/shedding.py) the 64 connections got 0.53 of the 8's rate
(13 against 24.5 a second on a 2-core machine): each shed cost ~3 ms of CPU inside
Litestar, and 300 of them a second came back at once.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from app.settings import PasswordSettings
from testkit.server_process import LITESTAR_CLI, ROOT, ServerProcess
from tests.integration.faults import LOGIN, UNTHROTTLED, is_problem

PASSWORD = "overload-tamarind-41-quarry"
ACCOUNTS = 2000
SECONDS = 6.0


@dataclass
class Phase:
    connections: int
    ok: int = 0
    statuses: dict[int, int] = field(default_factory=dict)
    bad: list[httpx.Response] = field(default_factory=list)
    shed_seconds: list[float] = field(default_factory=list)
    elapsed: float = 0.0

    @property
    def ok_per_second(self) -> float:
        return self.ok / self.elapsed


async def _closed_loop(base: str, prefix: str, connections: int, seconds: float) -> Phase:
    """``connections`` clients, each logging a random account in and at once again,
    whatever the answer (no back-off: the worst client there is)."""
    phase = Phase(connections)
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    async with httpx.AsyncClient(base_url=base, timeout=60, limits=limits) as client:
        deadline = time.perf_counter() + seconds

        async def one(worker: int) -> None:
            index = worker
            while time.perf_counter() < deadline:
                index = (index * 7919 + 17) % ACCOUNTS + 1
                started = time.perf_counter()
                response = await client.post(LOGIN, json={"username": f"{prefix}{index:06d}", "password": PASSWORD})
                phase.statuses[response.status_code] = phase.statuses.get(response.status_code, 0) + 1
                if response.status_code == 200:
                    phase.ok += 1
                elif is_problem(response, 503, "hashing-capacity-exceeded"):
                    phase.shed_seconds.append(time.perf_counter() - started)
                else:
                    phase.bad.append(response)

        started = time.perf_counter()
        await asyncio.gather(*(one(worker) for worker in range(connections)))
        phase.elapsed = time.perf_counter() - started
    return phase


def _idle(base: str) -> None:
    """The last phase's queued hashes finish before the next phase starts."""
    for _ in range(100):
        text = httpx.get(f"{base}/metrics", timeout=10).text
        if all(
            sample.value == 0
            for family in text_string_to_metric_families(text)
            for sample in family.samples
            if sample.name in ("user_service_password_hash_running", "user_service_password_hash_queue_depth")
        ):
            return
        time.sleep(0.2)


@pytest.mark.slow
def test_clients_that_ignore_retry_after_do_not_starve_the_logins_that_get_through(
    server_process: Callable[..., ServerProcess],
) -> None:
    defaults = PasswordSettings()  # as deployed: m=46 MiB, t=2, one thread per core, queue 32
    server = server_process(
        USER_SERVICE_PASSWORDS__TIME_COST=str(defaults.time_cost),
        USER_SERVICE_PASSWORDS__MEMORY_COST_KIB=str(defaults.memory_cost_kib),
        USER_SERVICE_PASSWORDS__POOL_SIZE=str(defaults.pool_size),
        USER_SERVICE_PASSWORDS__QUEUE_SIZE=str(defaults.queue_size),
        USER_SERVICE_LOGGING__LEVEL="WARNING",
        **UNTHROTTLED,
    ).untraced()
    prefix = f"ovl{os.getpid() % 100000}x"
    seeded = subprocess.run(
        [*LITESTAR_CLI, "users", "seed", "--count", str(ACCOUNTS), "--prefix", prefix],
        cwd=ROOT,
        env={**server.env, "USER_SERVICE_SEED_PASSWORD": PASSWORD},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert seeded.returncode == 0, seeded.stderr
    server.start()
    try:
        asyncio.run(_closed_loop(server.base_url, prefix, 2, 2.0))  # warm: statements compiled, pool filled
        _idle(server.base_url)
        saturated = asyncio.run(_closed_loop(server.base_url, prefix, 8, SECONDS))
        _idle(server.base_url)
        overloaded = asyncio.run(_closed_loop(server.base_url, prefix, 64, SECONDS))
        metrics = httpx.get(f"{server.base_url}/metrics", timeout=10).text
    finally:
        server.stop()

    print(  # noqa: T201 - the figures the note and README quote (-s shows them)
        f"\noverload: 8 connections {saturated.ok_per_second:.1f} logins/s {saturated.statuses}; "
        f"64 connections {overloaded.ok_per_second:.1f} logins/s {overloaded.statuses}"
    )
    for phase in (saturated, overloaded):
        assert not phase.bad, [(r.status_code, r.text[:200]) for r in phase.bad[:5]]
    assert overloaded.shed_seconds, "64 connections never overflowed the pool and its queue"
    # Goodput holds: the goal is 0.9 of the saturation rate (measured 0.95-1.0 here); the
    # margin is for this shared machine's noise. Before the edge shed it was 0.53.
    assert overloaded.ok_per_second >= 0.8 * saturated.ok_per_second, (saturated, overloaded)
    # Each shed was held (an idle wait) before it went: the brake on clients like these.
    held = sorted(overloaded.shed_seconds)[len(overloaded.shed_seconds) // 2]
    assert held >= defaults.shed_delay_seconds, held
    # And counted where an SRE looks: the login's shed counter and the route's 503s.
    samples = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(metrics)
        for sample in family.samples
    }
    sheds = sum(1 for _ in overloaded.shed_seconds)
    assert samples[("user_service_login_attempts_total", (("result", "shed"),))] >= sheds
    route_503 = (
        "http_server_request_duration_seconds_count",
        (("http_request_method", "POST"), ("http_response_status_code", "503"), ("http_route", LOGIN)),
    )
    assert samples[route_503] >= sheds
