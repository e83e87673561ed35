"""Readiness transitions counted by the process that answered (issue 20, point 3): a
readiness that flips at every probe looks steady to any sampling of the answers (the
2-minute readiness signal, ``changes()`` of it), never to a count of the flips. On the real
process, with the database cut and restored under it three times."""

from __future__ import annotations

import itertools
import re
import time
from collections.abc import Callable

import httpx

from testkit.server_process import ServerProcess
from tests.integration.faults import proxied_server

TRANSITION = re.compile(r'^user_service_readiness_transitions_total\{to="(\w+)"\} (\S+)$', re.MULTILINE)


def _transitions(server: ServerProcess) -> dict[str, float]:
    text = httpx.get(f"{server.base_url}/metrics", timeout=10).text
    return {state: float(value) for state, value in TRANSITION.findall(text)}


def test_every_change_of_the_readiness_answer_is_counted_and_nothing_else(
    server_process: Callable[..., ServerProcess], clean_database: str
) -> None:
    with proxied_server(server_process, clean_database, USER_SERVICE_DB__POOL_TIMEOUT_SECONDS="2") as (server, proxy):
        answers: list[int] = []

        def probe() -> int:
            answers.append(httpx.get(f"{server.base_url}/health/ready", timeout=10).status_code)
            return answers[-1]

        def until(status: int) -> None:
            deadline = time.monotonic() + 30
            while probe() != status:
                assert time.monotonic() < deadline, answers
                time.sleep(0.1)

        # Both values exist from the start, at 0: the first flip is visible to rate().
        assert _transitions(server) == {"ready": 0, "not_ready": 0}
        until(200)
        probe()  # the same answer again: no transition
        for _ in range(3):
            proxy.cut()
            until(503)
            probe()
            proxy.restore()
            until(200)
        flips = {"ready": 0, "not_ready": 0}
        for before, after in itertools.pairwise(answers):
            if before != after:
                flips["ready" if after == 200 else "not_ready"] += 1
        assert flips["not_ready"] >= 3
        assert _transitions(server) == flips
