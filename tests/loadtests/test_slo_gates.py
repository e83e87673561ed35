"""SLO gates: each one can fail. Synthetic Locust CSV reports against loadtests/slo.toml.

No Locust import here (it monkey-patches the standard library with gevent on import);
the CSV header is Locust 2.x's ``<prefix>_stats.csv`` header as it writes it.
"""

from __future__ import annotations

import csv
import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import pytest

from loadtests.gates import (
    SloError,
    evaluate,
    evaluate_report,
    load_slo,
    parse_slo,
    read_stats,
    render,
)
from loadtests.profiles import ProfileError, load_profiles, parse_duration, parse_profile
from loadtests.runner import EXIT_BROKEN, EXIT_GATE_FAILED, EXIT_PASSED, locust_command, main
from loadtests.scenarios.config import ConfigError, LoadTestConfig, parse_mix
from loadtests.step_plan import StepPlan

HEADER = [
    "Type",
    "Name",
    "Request Count",
    "Failure Count",
    "Median Response Time",
    "Average Response Time",
    "Min Response Time",
    "Max Response Time",
    "Average Content Size",
    "Requests/s",
    "Failures/s",
    *("50%", "66%", "75%", "80%", "90%", "95%", "98%", "99%", "99.9%", "99.99%", "100%"),
]


@dataclass
class Row:
    method: str
    name: str
    requests: int
    failures: int = 0
    p95: float | str = 10
    p99: float | str = 20


def write_report(directory: Path, rows: Iterable[Row], exceptions: int = 0) -> Path:
    """A Locust ``--csv <directory>/locust`` report; returns the prefix."""
    rows = list(rows)
    directory.mkdir(parents=True, exist_ok=True)
    with (directory / "locust_stats.csv").open("w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(HEADER)
        total = Row("", "Aggregated", sum(r.requests for r in rows), sum(r.failures for r in rows), 100, 200)
        for row in [*rows, total]:
            percentiles = [5, 6, 7, 8, 9, row.p95, row.p95, row.p99, row.p99, row.p99, row.p99]
            counts = [row.requests, row.failures, 5, 6.0, 1.0, 50.0, 100, 1.0, 0.0]
            writer.writerow([row.method, row.name, *counts, *percentiles])
    with (directory / "locust_exceptions.csv").open("w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(["Count", "Message", "Traceback", "Nodes"])
        if exceptions:
            writer.writerow([exceptions, "KeyError('access_token')", "Traceback ...", "local"])
    return directory / "locust"


def smoke_rows_at_the_limits() -> list[Row]:
    """Every gated smoke endpoint exactly at its limits (a gate is "<="), plus a shed-free mix."""
    slo = load_slo("smoke")
    rows = []
    for key, limits in slo.endpoints.items():
        method, name = key.split(" ", 1)
        rows.append(
            Row(
                method,
                name,
                requests=max(limits.min_requests, 100),
                p95=limits.p95_ms if limits.p95_ms is not None else 1,
                p99=limits.p99_ms if limits.p99_ms is not None else (limits.p95_ms or 1),
            )
        )
    return rows


def replace_row(rows: list[Row], key: str, **changes: object) -> list[Row]:
    return [
        dataclasses.replace(row, **changes) if f"{row.method} {row.name}" == key else row  # type: ignore[arg-type]
        for row in rows
    ]


def failed_gates(prefix: Path, profile: str = "smoke") -> list[str]:
    return [r.gate for r in evaluate_report(load_slo(profile), prefix) if not r.passed]


def test_the_synthetic_report_reads_like_locusts(tmp_path: Path) -> None:
    write_report(tmp_path, [Row("GET", "/api/v1/users/me", 120, 1, 12, 40)])
    rows = read_stats(tmp_path / "locust_stats.csv")
    me = rows["GET /api/v1/users/me"]
    assert (me.requests, me.failures, me.p95_ms, me.p99_ms) == (120, 1, 12.0, 40.0)
    assert rows["Aggregated"].requests == 120


def test_a_report_within_every_smoke_limit_passes(tmp_path: Path) -> None:
    prefix = write_report(tmp_path, smoke_rows_at_the_limits())
    results = evaluate_report(load_slo("smoke"), prefix)
    assert all(r.passed for r in results), render(results)
    assert len(results) > 3 + len(load_slo("smoke").endpoints)  # ratios, exceptions and per-endpoint gates
    assert main(["gates", str(tmp_path), "--profile", "smoke"]) == EXIT_PASSED


@pytest.mark.parametrize(
    ("key", "change", "gate"),
    [
        ("POST /api/v1/auth/login", {"p99": 5000}, "POST /api/v1/auth/login p99"),
        ("POST /api/v1/auth/login", {"p95": 501}, "POST /api/v1/auth/login p95"),
        ("GET /api/v1/users/me", {"p95": 31}, "GET /api/v1/users/me p95"),
        ("GET /api/v1/users/me", {"p99": "N/A"}, "GET /api/v1/users/me p99"),
        ("POST /api/v1/auth/refresh", {"requests": 9}, "POST /api/v1/auth/refresh requests"),
        ("POST /api/v1/auth/register", {"failures": 1}, "error ratio"),
    ],
)
def test_breaking_one_limit_fails_that_gate_and_the_run(
    tmp_path: Path, key: str, change: dict[str, object], gate: str, capsys: pytest.CaptureFixture[str]
) -> None:
    prefix = write_report(tmp_path, replace_row(smoke_rows_at_the_limits(), key, **change))
    assert failed_gates(prefix) == [gate]
    assert main(["gates", str(tmp_path), "--profile", "smoke"]) == EXIT_GATE_FAILED
    failing_line = next(line for line in capsys.readouterr().out.splitlines() if line.startswith(gate))
    assert failing_line.rstrip().endswith("FAIL")


def test_sheds_count_apart_from_errors_and_fail_their_own_gate(tmp_path: Path) -> None:
    rows = [*smoke_rows_at_the_limits(), Row("POST", "/api/v1/auth/login [shed]", 3)]
    # The availability objective counts the sheds as well: a shed is a 503 to its client.
    assert failed_gates(write_report(tmp_path, rows)) == ["shed ratio", "SLO availability: failures + sheds"]
    # The capacity profile tolerates some shedding: 3 in ~1,000 requests passes there.
    capacity = [Row("GET", "/api/v1/users/me", 600, p99=100), Row("POST", "/api/v1/auth/refresh", 400, p99=100)]
    prefix = write_report(tmp_path / "capacity", [*capacity, Row("POST", "/api/v1/auth/login [shed]", 3)])
    assert failed_gates(prefix, "capacity") == []
    prefix = write_report(tmp_path / "capacity-over", [*capacity, Row("POST", "/api/v1/auth/login [shed]", 300)])
    assert failed_gates(prefix, "capacity") == ["shed ratio"]


def test_an_endpoint_nobody_called_and_a_scenario_exception_fail(tmp_path: Path) -> None:
    rows = [r for r in smoke_rows_at_the_limits() if r.name != "/api/v1/users/{user_id}"]
    assert failed_gates(write_report(tmp_path / "a", rows)) == ["GET /api/v1/users/{user_id} requests"]
    assert failed_gates(write_report(tmp_path / "b", smoke_rows_at_the_limits(), exceptions=2)) == [
        "scenario exceptions"
    ]


def test_an_empty_or_missing_report_fails(tmp_path: Path) -> None:
    assert [r.passed for r in evaluate(load_slo("smoke"), {})] == [False]
    assert failed_gates(tmp_path / "nothing-here" / "locust") == ["Locust CSV report"]
    assert main(["gates", str(tmp_path / "nothing-here"), "--profile", "smoke"]) == EXIT_GATE_FAILED


def test_a_typo_in_the_slo_file_is_an_error_not_a_gate_that_never_fails() -> None:
    base = {"error_ratio_max": 0.0, "shed_ratio_max": 0.0}
    with pytest.raises(SloError, match="unknown keys"):
        parse_slo({"smoke": {**base, "eror_ratio_max": 0.1}}, "smoke")
    with pytest.raises(SloError, match="no scenario records"):
        parse_slo({"smoke": {**base, "endpoints": {"GET /api/v1/user/me": {"p95_ms": 10}}}}, "smoke")
    with pytest.raises(SloError, match="unknown keys"):
        parse_slo({"smoke": {**base, "endpoints": {"GET /api/v1/users/me": {"p59_ms": 10}}}}, "smoke")
    with pytest.raises(SloError, match="needs p95_ms or p99_ms"):
        parse_slo({"smoke": {**base, "endpoints": {"GET /api/v1/users/me": {"min_requests": 10}}}}, "smoke")
    with pytest.raises(SloError, match="must be a number"):
        parse_slo({"smoke": {"error_ratio_max": "0.1", "shed_ratio_max": 0.0}}, "smoke")
    with pytest.raises(SloError, match="no \\[soak\\] section"):
        parse_slo({"smoke": base}, "soak")


def test_every_profile_has_gates_and_a_bounded_length() -> None:
    profiles = load_profiles()
    assert {"smoke", "capacity", "soak"} <= set(profiles)
    for name, profile in profiles.items():
        load_slo(name)  # parses, and names only endpoints the scenarios record
        assert 0 < profile.expected_seconds <= 2 * 3600
    assert profiles["smoke"].run_time_seconds == 30
    assert profiles["capacity"].is_step_load
    assert profiles["capacity"].locust_env()["LOADTEST_SHAPE"] == "step"
    assert profiles["soak"].run_time_seconds == 30 * 60


def test_the_locust_command_line_of_a_profile() -> None:
    profiles = load_profiles()
    smoke = locust_command(profiles["smoke"], "http://127.0.0.1:1", Path("/r"))
    assert smoke[smoke.index("--run-time") + 1] == "30s"
    assert smoke[smoke.index("--csv") + 1] == "/r/locust"
    assert "--master" not in smoke
    distributed = locust_command(profiles["capacity"], "http://127.0.0.1:1", Path("/r"), master_workers=3)
    assert distributed[distributed.index("--expect-workers") + 1] == "3"
    assert "--run-time" not in distributed  # the step shape ends the run itself


def test_a_step_load_by_offered_rate_becomes_users_and_pacing() -> None:
    login_capacity = load_profiles()["login-capacity"]
    env = login_capacity.locust_env()
    pacing = float(env["LOADTEST_ARRIVAL_PACING_SECONDS"])
    # 8, 16 ... 96 logins/s: one user per login/s at a pacing of 1 s.
    assert int(env["LOADTEST_STEP_START_USERS"]) / pacing == 8
    assert int(env["LOADTEST_STEP_USERS"]) / pacing == 8
    assert int(env["LOADTEST_STEP_MAX_USERS"]) / pacing == 96
    assert env["LOADTEST_MIX"] == "LoginArrivals=1"
    # The shape reads the offered rate back from the same environment.
    plan = StepPlan.from_env(env)
    assert [plan.offered_per_s(plan.users(step)) for step in range(3)] == [8.0, 16.0, 24.0]
    assert StepPlan.from_env({**env, "LOADTEST_MIX": "LoginStorm=1"}).offered_per_s(8) is None
    half = parse_profile("x", {"mix": {"LoginArrivals": 1}, "step": {"start_rate": 3, "step_rate": 2, "max_rate": 9,
                                                                       "pacing_seconds": 2}})  # fmt: skip
    assert (half.step["LOADTEST_STEP_START_USERS"], half.step["LOADTEST_STEP_MAX_USERS"]) == ("6", "18")
    with pytest.raises(ProfileError, match="not a whole number"):
        parse_profile("x", {"step": {"start_rate": 3, "step_rate": 1, "max_rate": 9, "pacing_seconds": 0.5}})
    with pytest.raises(ProfileError, match="either rates"):
        parse_profile("x", {"step": {"start_rate": 3, "step_rate": 1, "max_rate": 9, "start_users": 2}})
    with pytest.raises(ProfileError, match="needs max_rate"):
        parse_profile("x", {"step": {"start_rate": 3, "step_rate": 1}})


def test_profile_and_duration_errors() -> None:
    assert parse_duration("90s") == 90
    assert parse_duration("1h30m") == 5400
    assert parse_duration("45") == 45
    with pytest.raises(ProfileError):
        parse_duration("soon")
    with pytest.raises(ProfileError, match="unknown user classes"):
        parse_profile("x", {"run_time": "1s", "mix": {"LoginStrom": 1}})
    with pytest.raises(ProfileError, match="needs run_time"):
        parse_profile("x", {"users": 3})
    assert main(["run", "--profile", "nope", "--host", "http://127.0.0.1:1"]) == EXIT_BROKEN


def test_scenario_configuration_from_the_environment() -> None:
    config = LoadTestConfig.from_env(
        {
            "LOADTEST_PASSWORD": "pw-pw-pw-pw",
            "LOADTEST_USER_COUNT": "250",
            "LOADTEST_USER_PREFIX": "lt",
            "LOADTEST_MIX": "ApiClient=3, LoginStorm=1",
        }
    )
    assert (config.user_count, config.wrong_password_share, config.seeded_username(7)) == (250, 0.1, "lt000007")
    assert config.mix == {"ApiClient": 3, "LoginStorm": 1}
    with pytest.raises(ConfigError, match="LOADTEST_PASSWORD"):
        LoadTestConfig.from_env({})
    with pytest.raises(ConfigError, match="between 0 and 1"):
        LoadTestConfig.from_env({"LOADTEST_PASSWORD": "x", "LOADTEST_WRONG_PASSWORD_SHARE": "1.5"})
    with pytest.raises(ConfigError, match="AdminBrowser"):
        LoadTestConfig.from_env({"LOADTEST_PASSWORD": "x", "LOADTEST_MIX": "AdminBrowser=1"})
    with pytest.raises(ConfigError):
        parse_mix("Nobody=1")
    assert parse_mix("") is None


# --- the gates the SLOs imply (objectives.toml, generated from deploy/slo/slos.yml) ------


def soak_rows(login_p99: float, failures: int = 0, sheds: int = 0) -> list[Row]:
    slo = load_slo("soak")
    rows = []
    for key, limits in slo.endpoints.items():
        method, name = key.split(" ", 1)
        rows.append(
            Row(method, name, requests=max(limits.min_requests, 5000), p95=limits.p95_ms or 1, p99=limits.p99_ms or 1)
        )
    rows = replace_row(rows, "POST /api/v1/auth/login", p99=login_p99, failures=failures)
    if sheds:
        rows.append(Row("POST", "/api/v1/auth/login [shed]", requests=sheds))
    return rows


def test_the_soak_profile_holds_the_login_latency_objective_as_a_p99(tmp_path: Path) -> None:
    at_the_objective = write_report(tmp_path / "at", soak_rows(login_p99=250))
    assert failed_gates(at_the_objective, "soak") == []
    over = write_report(tmp_path / "over", soak_rows(login_p99=260))
    # Its own limit (800 ms) passes; the SLO's 250 ms does not.
    assert failed_gates(over, "soak") == ["SLO login-latency: POST /api/v1/auth/login p99"]


def test_the_availability_objective_counts_sheds_with_failures(tmp_path: Path) -> None:
    rows = soak_rows(login_p99=200, failures=10, sheds=20)
    total = sum(row.requests for row in rows)
    assert 0.001 * total < 30  # 30 bad of the total is over the 0.1 % budget ...
    assert 0.001 * total >= 10  # ... while the failures alone are within the profile's own 0.1 %
    prefix = write_report(tmp_path, rows)
    assert "SLO availability: failures + sheds" in failed_gates(prefix, "soak")


def test_an_objective_the_generated_file_does_not_hold_is_refused() -> None:
    with pytest.raises(SloError, match="objectives"):
        parse_slo({"smoke": {"error_ratio_max": 0, "shed_ratio_max": 0, "objectives": ["freshness"]}}, "smoke")
