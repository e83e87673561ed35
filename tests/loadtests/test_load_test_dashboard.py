"""Locust's figures as Prometheus metrics, and the "Load test" dashboard proven on them: a
real Prometheus scrapes the service and Locust (``LOADTEST_METRICS_PORT``) during a run of
the runner, and every query of the dashboard returns data. The run's window is recorded
(``run-window.json``, ``runs.jsonl``) and posted to a Grafana annotations endpoint (a
local stand-in that records what it gets)."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from loadtests.profiles import load_profiles
from loadtests.service import started_service
from testkit.ports import free_port
from tests.conftest import ROOT
from tests.deploy.alert_stack import Sink, running_prometheus, until_every_panel_has_data
from tests.deploy.artifacts import LOAD_TEST_DASHBOARD

pytestmark = pytest.mark.slow

RUN_SECONDS = 30
Started = tuple[str, dict[str, str]]  # the service's URL, and LOADTEST_* for Locust


@pytest.fixture
def service(
    clean_database: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[str, dict[str, str]]]:
    monkeypatch.setenv("LOADTEST_DATABASE_URL", clean_database)
    # Cheap hashes: this test is about the telemetry, not the hashing ceiling.
    monkeypatch.setenv("USER_SERVICE_PASSWORDS__TIME_COST", "1")
    monkeypatch.setenv("USER_SERVICE_PASSWORDS__MEMORY_COST_KIB", "1024")
    profile = replace(load_profiles()["smoke"], seed_users=20)
    (tmp_path / "service").mkdir()
    with started_service(profile, tmp_path / "service") as started:
        yield started.base_url, started.locust_env


async def test_every_load_test_panel_has_data_during_a_run_and_the_run_is_recorded(
    service: Started, tmp_path: Path
) -> None:
    base_url, locust_env = service
    metrics_port = free_port()
    slo = tmp_path / "slo.toml"
    slo.write_text("[any]\nerror_ratio_max = 1.0\nshed_ratio_max = 1.0\n")
    reports = tmp_path / "reports" / "run"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LOADTEST_", "USER_SERVICE_", "OTEL_"))}
    with Sink().running() as grafana:
        env |= {
            **locust_env,
            "LOADTEST_METRICS_PORT": str(metrics_port),
            "GRAFANA_URL": grafana.url,
            "GRAFANA_TOKEN": "test-token",
        }
        host = base_url.removeprefix("http://")
        jobs = {"user-service": host, "locust": f"127.0.0.1:{metrics_port}"}
        async with running_prometheus(tmp_path / "prometheus", jobs) as prometheus:
            command = [sys.executable, "-m", "loadtests", "run", "--profile", "smoke", "--host", base_url]
            command += ["--run-time", f"{RUN_SECONDS}s", "--users", "6", "--report-dir", str(reports)]
            runner = await asyncio.create_subprocess_exec(
                *command,
                *("--slo", str(slo), "--slo-profile", "any"),
                env={**env, "PYTHONUNBUFFERED": "1"},
                cwd=ROOT,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
            )
            try:
                empty = await until_every_panel_has_data(prometheus, LOAD_TEST_DASHBOARD, within=RUN_SECONDS - 5)
            finally:
                try:
                    stdout, _ = await asyncio.wait_for(runner.communicate(), timeout=RUN_SECONDS + 120)
                except TimeoutError:
                    runner.kill()  # Locust's own processes end with their parent's pipes
                    await runner.wait()
                    raise
    output = stdout.decode(errors="replace")
    assert runner.returncode == 0, output[-4000:]
    assert not empty, "no data:\n" + "\n".join(empty)
    window = json.loads((reports / "run-window.json").read_text())
    assert window["profile"] == "smoke"
    assert window["start"] < window["end"]
    assert window["locust_exit_code"] == 0
    assert json.loads((reports.parent / "runs.jsonl").read_text().splitlines()[-1]) == window
    annotations = [n for n in grafana.received if n.path == "/api/annotations"]
    assert len(annotations) == 1
    assert annotations[0].body["tags"] == ["loadtest", "smoke"]
    assert annotations[0].body["timeEnd"] > annotations[0].body["time"]
