"""The smoke load profile in CI: ``python -m loadtests run --profile smoke --start-service``
starts the service on the test database, seeds it, runs Locust for 30 s and must pass every
gate of loadtests/slo.toml [smoke]; and the same runner in Locust's distributed mode."""

from __future__ import annotations

import csv
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.slow

REPORTS = ("locust_stats.csv", "locust_failures.csv", "locust_stats_history.csv", "report.html", "gates.txt")


def run_loadtests(
    database_url: str, report_dir: Path, *args: str, timeout: float, **extra_env: str
) -> subprocess.CompletedProcess[str]:
    # The developer's own LOADTEST_* / USER_SERVICE_* settings must not change what CI runs.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LOADTEST_", "USER_SERVICE_"))}
    env["LOADTEST_DATABASE_URL"] = database_url
    env.update(extra_env)
    return subprocess.run(
        [sys.executable, "-m", "loadtests", "run", "--start-service", "--report-dir", str(report_dir), *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def explain(result: subprocess.CompletedProcess[str]) -> str:
    return f"exit {result.returncode}\n{result.stdout[-6000:]}\n{result.stderr[-3000:]}"


def test_the_smoke_profile_passes_its_gates(clean_database: str, tmp_path: Path) -> None:
    reports = tmp_path / "smoke"
    result = run_loadtests(clean_database, reports, "--profile", "smoke", timeout=240)
    assert result.returncode == 0, explain(result)
    for name in REPORTS:
        assert (reports / name).stat().st_size > 0, name
    gates = (reports / "gates.txt").read_text()
    assert "FAIL" not in gates
    assert "POST /api/v1/auth/login p95" in gates
    assert "SLO gates" in result.stdout
    assert_one_verify_per_password_step(reports)


def assert_one_verify_per_password_step(reports: Path) -> None:
    """Every password checked at /login cost one argon2 verify and the second factor's
    code step none, in the service's own counts (Locust's cannot say: a request in flight
    when the run stops is served but not recorded)."""
    metrics = (reports / "service-metrics.txt").read_text()

    def count(sample: str) -> float:
        found = re.search(rf"^{re.escape(sample)} ([\d.e+]+)$", metrics, re.M)
        assert found is not None, sample
        return float(found.group(1))

    passwords_checked = count('user_service_login_attempts_total{result="success"}')
    passwords_checked += count('user_service_login_attempts_total{result="failed"}')
    assert count('user_service_mfa_challenges_total{purpose="login",result="success"}') > 0
    assert count('user_service_password_hash_duration_seconds_count{operation="verify"}') == passwords_checked


def test_distributed_mode_and_sheds_counted_apart_from_errors(clean_database: str, tmp_path: Path) -> None:
    """Master + 2 worker processes for 12 s against a service whose hashing pool is one
    thread with no queue, so that logins are shed (503 + Retry-After): the sheds must be
    recorded as "<name> [shed]" and not as failures. Judged by a section of its own (the
    smoke gates want 30 s of traffic and no sheds): no errors, traffic on the endpoints."""
    slo = tmp_path / "slo.toml"
    slo.write_text(
        "[distributed]\nerror_ratio_max = 0.0\nshed_ratio_max = 1.0\n"
        '[distributed.endpoints."POST /api/v1/auth/login"]\np95_ms = 2000\nmin_requests = 5\n'
        '[distributed.endpoints."GET /api/v1/users/me"]\np95_ms = 200\nmin_requests = 10\n'
    )
    reports = tmp_path / "distributed"
    result = run_loadtests(
        clean_database,
        reports,
        *("--profile", "smoke", "--workers", "2", "--run-time", "12s", "--users", "16"),
        *("--slo", str(slo), "--slo-profile", "distributed"),
        timeout=180,
        LOADTEST_MIX="LoginStorm=1,ApiClient=1",
        USER_SERVICE_PASSWORDS__POOL_SIZE="1",
        USER_SERVICE_PASSWORDS__QUEUE_SIZE="0",
    )
    assert result.returncode == 0, explain(result)
    assert "--master" in result.stdout
    assert "--expect-workers 2" in result.stdout
    assert (reports / "worker-1.log").exists()
    assert (reports / "worker-2.log").exists()
    assert (reports / "report.html").stat().st_size > 0
    assert "FAIL" not in (reports / "gates.txt").read_text()
    with (reports / "locust_stats.csv").open(newline="") as stats:
        rows = {row["Name"]: row for row in csv.DictReader(stats)}
    shed = rows["/api/v1/auth/login [shed]"]
    assert int(shed["Request Count"]) > 0
    assert int(shed["Failure Count"]) == 0
    assert int(rows["Aggregated"]["Failure Count"]) == 0
