"""The pieces of the stuffing scenario that need no service: simulated addresses, how an
attacker's response is classified, the share gates of loadtests/slo.toml [stuffing], the
attack configuration, and the service summary the runner prints.

No Locust import (it monkey-patches the standard library with gevent): the synthetic CSV
reports come from tests/loadtests/test_slo_gates.py.
"""

from __future__ import annotations

import ipaddress
import random
from pathlib import Path

import pytest

from loadtests.gates import SloError, evaluate_report, load_slo, parse_slo, render
from loadtests.profiles import load_profiles
from loadtests.runner import EXIT_GATE_FAILED, EXIT_PASSED, main, summarize_service_metrics
from loadtests.scenarios import addresses, names
from loadtests.scenarios.config import ConfigError, LoadTestConfig
from loadtests.service import has_attack, service_env
from tests.loadtests.test_slo_gates import Row, replace_row, write_report

STUFFING = "POST " + names.STUFFING
SPRAYING = "POST " + names.SPRAYING


# --- simulated addresses -------------------------------------------------------------------


def test_the_stuffers_pool_is_the_same_fixed_set_on_every_worker() -> None:
    pool = addresses.address_pool(addresses.STUFFERS, 50)
    assert pool == addresses.address_pool(addresses.STUFFERS, 50)
    assert len(set(pool)) == 50
    assert all(ipaddress.ip_address(a) in addresses.STUFFERS for a in pool)
    with pytest.raises(ValueError, match="1 to 32766"):
        addresses.address_pool(addresses.STUFFERS, 0)
    with pytest.raises(ValueError, match="1 to 32766"):
        addresses.address_pool(addresses.STUFFERS, 40_000)


def test_people_and_attackers_come_from_apart_benchmarking_ranges() -> None:
    rng = random.Random(7)  # noqa: S311 - a reproducible sample, not crypto
    people = {addresses.random_address(addresses.PEOPLE, rng) for _ in range(2000)}
    assert len(people) > 1900  # a storm's logins come from (nearly) all different addresses
    benchmarking = ipaddress.IPv4Network("198.18.0.0/15")  # RFC 2544: never routed
    for network in (addresses.PEOPLE, addresses.STUFFERS, addresses.SPRAYERS):
        assert network.subnet_of(benchmarking)
    assert not addresses.PEOPLE.overlaps(addresses.STUFFERS)
    assert not addresses.PEOPLE.overlaps(addresses.SPRAYERS)
    assert not addresses.STUFFERS.overlaps(addresses.SPRAYERS)
    for address in people:
        ip = ipaddress.ip_address(address)
        assert ip in addresses.PEOPLE
        assert ip not in (addresses.PEOPLE.network_address, addresses.PEOPLE.broadcast_address)


def test_the_runners_service_trusts_the_load_generator_and_has_the_limits_on(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("USER_SERVICE_HTTP__TRUSTED_PROXIES", raising=False)
    monkeypatch.delenv("USER_SERVICE_RATE_LIMITS__ENABLED", raising=False)
    env = service_env()
    assert env["USER_SERVICE_HTTP__TRUSTED_PROXIES"] == "127.0.0.1"
    assert env["USER_SERVICE_RATE_LIMITS__ENABLED"] == "true"
    # A pure capacity run turns the limits off; the caller's setting wins.
    monkeypatch.setenv("USER_SERVICE_RATE_LIMITS__ENABLED", "false")
    assert service_env()["USER_SERVICE_RATE_LIMITS__ENABLED"] == "false"


# --- what an attacker's response counts as ---------------------------------------------------


@pytest.mark.parametrize(
    ("status", "problem", "retry_after", "outcome"),
    [
        (401, "invalid-credentials", False, names.REFUSED),
        (429, "too-many-requests", True, names.RATE_LIMITED),
        (429, "login-throttled", True, names.THROTTLED),
        (503, "hashing-capacity-exceeded", True, names.SHED_SUFFIX),
        # Not the protections working: failures.
        (429, "too-many-requests", False, None),  # a refusal without Retry-After
        (429, "login-throttled", False, None),
        (503, "dependency-unavailable", True, None),
        (200, "", False, None),  # an attacker's guess logged in
        (500, "internal-error", False, None),
        (0, "", False, None),  # connection error
    ],
)
def test_each_answer_to_an_attacker_has_its_own_outcome(
    status: int, problem: str, retry_after: bool, outcome: str | None
) -> None:
    assert names.attack_outcome(status, problem, retry_after) == outcome


def test_every_attack_outcome_is_a_name_the_gates_know() -> None:
    for attack in (STUFFING, SPRAYING):
        for outcome in names.ATTACK_OUTCOMES:
            assert names.is_recorded(attack + outcome)
    assert names.is_recorded("POST /api/v1/auth/login [shed]")
    assert not names.is_recorded("GET /api/v1/users/me [shed]")  # reading does not hash
    assert not names.is_recorded(STUFFING + " [blocked]")


# --- the [stuffing] gates ---------------------------------------------------------------------


def stuffing_rows() -> list[Row]:
    """A stuffing run that passes: legitimate traffic fast, both protections engaged."""
    return [
        Row("POST", names.LOGIN, 40, p95=300, p99=500),
        Row("POST", names.LOGIN_WRONG_PASSWORD, 4, p95=300, p99=300),
        Row("POST", names.REFRESH, 40, p95=40, p99=80),
        Row("POST", names.LOGOUT, 10, p95=20, p99=20),
        Row("GET", names.ME, 300, p95=20, p99=60),
        Row("POST", names.STUFFING + names.REFUSED, 300),
        Row("POST", names.STUFFING + names.RATE_LIMITED, 300),
        Row("POST", names.STUFFING + names.THROTTLED, 5),
        Row("POST", names.SPRAYING + names.REFUSED, 100),
        Row("POST", names.SPRAYING + names.THROTTLED, 500),
    ]


def failed(prefix: Path) -> list[str]:
    return [r.gate for r in evaluate_report(load_slo("stuffing"), prefix) if not r.passed]


def test_a_stuffing_run_with_both_protections_engaged_passes(tmp_path: Path) -> None:
    prefix = write_report(tmp_path, stuffing_rows())
    results = evaluate_report(load_slo("stuffing"), prefix)
    assert all(r.passed for r in results), render(results)
    assert main(["gates", str(tmp_path), "--profile", "stuffing"]) == EXIT_PASSED
    gates = {r.gate for r in results}
    assert f"{STUFFING}{names.RATE_LIMITED} share" in gates
    assert f"{SPRAYING}{names.THROTTLED} share" in gates


@pytest.mark.parametrize(
    ("rows", "gate"),
    [
        # The per-address limit never engaged (a target that does not trust the proxy
        # header would show up elsewhere, as 429s on the legitimate logins).
        (
            lambda rows: replace_row(rows, f"{STUFFING}{names.RATE_LIMITED}", requests=10),
            f"{STUFFING}{names.RATE_LIMITED} share",
        ),
        # The per-account throttle never engaged.
        (
            lambda rows: replace_row(rows, f"{SPRAYING}{names.THROTTLED}", requests=10),
            f"{SPRAYING}{names.THROTTLED} share",
        ),
        # One guess got in: the share gate says so by name (and the error ratio too).
        (
            lambda rows: [*rows, Row("POST", names.STUFFING + names.LOGGED_IN, 1, failures=1)],
            f"{STUFFING}{names.LOGGED_IN} share",
        ),
        (
            lambda rows: [*rows, Row("POST", names.SPRAYING + names.LOGGED_IN, 1, failures=1)],
            f"{SPRAYING}{names.LOGGED_IN} share",
        ),
        # The attack crowded the legitimate users out of the hashing pool.
        (
            lambda rows: [*rows, Row("POST", names.shed(names.LOGIN), 10)],
            f"POST {names.shed(names.LOGIN)} share",
        ),
        # An attack that hardly ran proves nothing.
        (
            lambda rows: [row for row in rows if not row.name.startswith(names.SPRAYING)],
            f"{SPRAYING}{names.THROTTLED} share",
        ),
        # The legitimate users' latency under attack.
        (lambda rows: replace_row(rows, f"GET {names.ME}", p99=5000), f"GET {names.ME} p99"),
    ],
)
def test_each_stuffing_gate_can_fail(tmp_path: Path, rows: object, gate: str) -> None:
    assert callable(rows)
    prefix = write_report(tmp_path, rows(stuffing_rows()))
    assert gate in failed(prefix)
    assert main(["gates", str(tmp_path), "--profile", "stuffing"]) == EXIT_GATE_FAILED


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({"of": [STUFFING + names.REFUSED], "min": 0.2}, "includes"),  # its own name is not in the group
        ({"of": [STUFFING + names.RATE_LIMITED, STUFFING + " [banned]"], "min": 0.2}, "no scenario records"),
        ({"of": [STUFFING + names.RATE_LIMITED]}, "needs min or max"),
        ({"of": [STUFFING + names.RATE_LIMITED], "min": 0.6, "max": 0.5}, "0 <= min <= max <= 1"),
        ({"of": [STUFFING + names.RATE_LIMITED], "max": 1.5}, "0 <= min <= max <= 1"),
        ({"of": STUFFING + names.RATE_LIMITED, "min": 0.2}, "list"),
        ({"of": [STUFFING + names.RATE_LIMITED], "min": 0.2, "floor": 1}, "unknown keys"),
    ],
)
def test_a_broken_share_gate_is_an_error_not_a_gate_that_never_fails(table: dict[str, object], message: str) -> None:
    document = {"p": {"error_ratio_max": 0, "shed_ratio_max": 0, "shares": {STUFFING + names.RATE_LIMITED: table}}}
    with pytest.raises(SloError, match=message):
        parse_slo(document, "p")


def test_the_stuffing_profile_runs_attackers_beside_legitimate_clients(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LOADTEST_MIX", raising=False)
    profile = load_profiles()["stuffing"]
    assert profile.mix["ApiClient"] > 0
    assert profile.mix["CredentialStuffer"] > 0
    assert profile.mix["PasswordSprayer"] > 0
    assert 60 <= profile.run_time_seconds <= 90
    assert has_attack(profile)
    assert not has_attack(load_profiles()["smoke"])
    monkeypatch.setenv("LOADTEST_MIX", "ApiClient=1,CredentialStuffer=1")
    assert has_attack(load_profiles()["smoke"])


# --- configuration and the service's own counters -------------------------------------------


def test_attack_configuration_from_the_environment() -> None:
    config = LoadTestConfig.from_env(
        {
            "LOADTEST_PASSWORD": "x",
            "LOADTEST_TARGET_PREFIX": "victim-",
            "LOADTEST_TARGET_COUNT": "20",
            "LOADTEST_STUFFING_ADDRESSES": "50",
            "LOADTEST_SPRAYING_ACCOUNTS": "3",
            "LOADTEST_ATTACK_RATE": "2.5",
            "LOADTEST_MIX": "ApiClient=4,CredentialStuffer=1,PasswordSprayer=1",
        }
    )
    assert (config.stuffing_addresses, config.spraying_accounts, config.attack_rate) == (50, 3, 2.5)
    assert config.target_username(7) == "victim-000007"
    assert config.mix == {"ApiClient": 4, "CredentialStuffer": 1, "PasswordSprayer": 1}
    # An unknown name can never be a seeded one ({prefix} + six digits has no ".").
    assert "." in config.unknown_username("nobody1")
    assert config.unknown_username("nobody1").startswith("victim-")


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("LOADTEST_STUFFING_ADDRESSES", "0"),
        ("LOADTEST_STUFFING_ADDRESSES", "40000"),
        ("LOADTEST_SPRAYING_ACCOUNTS", "1000"),  # must leave the stuffer some targets
        ("LOADTEST_ATTACK_RATE", "0"),
        ("LOADTEST_ATTACK_RATE", "fast"),
    ],
)
def test_bad_attack_configuration_is_refused(variable: str, value: str) -> None:
    with pytest.raises(ConfigError, match="LOADTEST_"):
        LoadTestConfig.from_env({"LOADTEST_PASSWORD": "x", variable: value})


def test_the_runner_summarises_what_the_protections_did() -> None:
    text = "\n".join(
        [
            "# TYPE user_service_login_attempts_total counter",
            'user_service_login_attempts_total{result="success"} 40.0',
            'user_service_login_attempts_total{result="throttled"} 512.0',
            'user_service_login_attempts_total{result="shed"} 0.0',
            "# TYPE user_service_rate_limited_total counter",
            'user_service_rate_limited_total{route="login"} 300.0',
            "# TYPE user_service_password_hash_duration_seconds histogram",
            'user_service_password_hash_duration_seconds_bucket{operation="verify",le="+Inf"} 450.0',
            'user_service_password_hash_duration_seconds_count{operation="verify"} 450.0',
            'user_service_password_hash_duration_seconds_sum{operation="verify"} 30.0',
            "# TYPE user_service_login_throttle_blocks_total counter",
            "user_service_login_throttle_blocks_total 61.0",
            "",
        ]
    )
    assert summarize_service_metrics(text) == [
        "login attempts: success 40, throttled 512",
        "refused by the per-address rate limit: login 300",
        "argon2 runs: verify 450",
        "account blocks started or lengthened: total 61",
    ]
