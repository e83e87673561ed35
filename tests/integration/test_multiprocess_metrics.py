"""Two worker processes: counters never reset between scrapes, gauges add up, a restart starts clean."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from testkit.server_process import CLEAN_EXIT, ServerProcess

LIVE_COUNT = "http_server_request_duration_seconds_count"


def scrape(base_url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = httpx.get(f"{base_url}/metrics", headers={"Connection": "close"}).text
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def live_requests(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float]) -> float:
    return sum(
        v for (name, labels), v in samples.items() if name == LIVE_COUNT and ("http_route", "/health/live") in labels
    )


def hit_live(base_url: str, times: int) -> None:
    # A new connection each time, so that both workers take some of them.
    for _ in range(times):
        assert httpx.get(f"{base_url}/health/live", headers={"Connection": "close"}).status_code == 200


@pytest.mark.slow
def test_two_workers_aggregate_and_never_reset(server_process: Callable[..., ServerProcess], tmp_path: Path) -> None:
    metrics_dir = tmp_path / "prometheus"
    server = server_process(
        USER_SERVICE_SERVER__WORKERS="2",
        USER_SERVICE_PASSWORDS__POOL_SIZE="3",
        PROMETHEUS_MULTIPROC_DIR=str(metrics_dir),
    )
    server.start()
    try:
        seen: list[float] = []
        sent = 0
        for batch in (15, 15, 20):
            hit_live(server.base_url, batch)
            sent += batch
            # Several scrapes in a row: whichever worker answers, the total is the same.
            seen.extend(live_requests(scrape(server.base_url)) for _ in range(4))
        assert seen == sorted(seen), f"a counter went backwards between scrapes: {seen}"
        assert seen[-1] == sent
        pids = {path.name.split("_")[-1] for path in metrics_dir.glob("counter_*.db")}
        assert len(pids) == 2, "both workers must have served (and written) requests"
        samples = scrape(server.base_url)
        # Gauges: the worker threads of both processes add up; build info stays 1.
        assert samples[("user_service_password_hash_workers", ())] == 6
        assert sum(v for (name, _), v in samples.items() if name == "user_service_build_info") == 1
    finally:
        assert server.stop() in CLEAN_EXIT, server.output

    # A restart empties the folder first: counts start again from what the new run serves.
    server.start()
    try:
        hit_live(server.base_url, 5)
        assert live_requests(scrape(server.base_url)) == 5
    finally:
        server.stop()


def _workers(supervisor_pid: int, metrics_dir: Path) -> set[int]:
    """The supervisor's children that write metrics (not multiprocessing's helper process)."""
    children = {int(pid) for pid in Path(f"/proc/{supervisor_pid}/task/{supervisor_pid}/children").read_text().split()}
    writers = {int(path.stem.rsplit("_", 1)[1]) for path in metrics_dir.glob("gauge_live*_*.db")}
    return children & writers


@pytest.mark.slow
def test_a_killed_workers_gauges_do_not_count_twice(
    server_process: Callable[..., ServerProcess], tmp_path: Path
) -> None:
    """SIGKILL (the OOM killer's signal) leaves a worker no time to drop its live gauges; the
    supervisor starts another beside its files. The next scrape forgets the dead one's."""
    server = server_process(
        USER_SERVICE_SERVER__WORKERS="2",
        USER_SERVICE_PASSWORDS__POOL_SIZE="3",
        PROMETHEUS_MULTIPROC_DIR=str(tmp_path / "prometheus"),
    ).start()
    try:
        assert server.process is not None
        deadline = time.monotonic() + 30
        while scrape(server.base_url)[("user_service_password_hash_workers", ())] != 6:
            assert time.monotonic() < deadline, "both workers never started their hashing pools"
            time.sleep(0.2)
        metrics_dir = tmp_path / "prometheus"
        before = _workers(server.process.pid, metrics_dir)
        assert len(before) == 2
        victim = min(before)
        os.kill(victim, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while not _workers(server.process.pid, metrics_dir) - before:
            assert time.monotonic() < deadline, "the supervisor did not replace the killed worker"
            time.sleep(0.2)
        # Until the new worker has started its pool: never the dead one's 3 threads on top
        # of the two live workers' 6.
        seen: list[float] = []
        while not seen or seen[-1] != 6:
            assert time.monotonic() < deadline, f"hashing workers seen last: {seen[-5:]}"
            hit_live(server.base_url, 2)
            seen.append(scrape(server.base_url)[("user_service_password_hash_workers", ())])
        assert max(seen) == 6, seen
        assert not list(metrics_dir.glob(f"gauge_live*_{victim}.db"))
    finally:
        server.stop()
