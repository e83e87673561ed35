"""A short credential-stuffing run in CI: ``python -m loadtests run --profile stuffing
--start-service`` cut to 20 s, with the service's default limits. Both protections must
engage (per-address 429s for the stuffer's few addresses, per-account 429s for the
sprayer's few names), no attacker may log in, and the legitimate API clients beside them
must see no error at all (no 429 either: each has its own simulated address)."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from loadtests.scenarios import names
from tests.loadtests.test_smoke_profile import explain, run_loadtests

pytestmark = pytest.mark.slow

LOGIN_ATTEMPTS = "user_service_login_attempts"
RATE_LIMITED = "user_service_rate_limited"

# Judged by a section of its own: 20 s on a shared CI machine proves that the protections
# engage, not what the legitimate users' latency is (the 60-s profile's gates do that).
SLO = """
[short]
error_ratio_max = 0.0
shed_ratio_max = 1.0

[short.endpoints."GET /api/v1/users/me"]
p99_ms = 2000
min_requests = 10
"""
ATTACK_GROUP = (names.REFUSED, names.RATE_LIMITED, names.THROTTLED, names.SHED_SUFFIX, names.LOGGED_IN)


def share_gate(attack: str, outcome: str, bound: str) -> str:
    group = ", ".join(f'"POST {attack}{o}"' for o in ATTACK_GROUP)
    return f'\n[short.shares."POST {attack}{outcome}"]\nof = [{group}]\n{bound}\nmin_requests = 30\n'


def counters(metrics: str, family: str, label: str) -> dict[str, float]:
    for parsed in text_string_to_metric_families(metrics):
        if parsed.name == family:
            return {s.labels[label]: s.value for s in parsed.samples if s.name == f"{family}_total"}
    return {}


def test_a_short_stuffing_run_engages_both_protections(clean_database: str, tmp_path: Path) -> None:
    slo = tmp_path / "slo.toml"
    slo.write_text(
        SLO
        + share_gate(names.STUFFING, names.RATE_LIMITED, "min = 0.1")
        + share_gate(names.STUFFING, names.LOGGED_IN, "max = 0.0")
        + share_gate(names.SPRAYING, names.THROTTLED, "min = 0.1")
        + share_gate(names.SPRAYING, names.LOGGED_IN, "max = 0.0")
    )
    reports = tmp_path / "stuffing"
    result = run_loadtests(
        clean_database,
        reports,
        *("--profile", "stuffing", "--run-time", "20s", "--users", "4"),
        *("--slo", str(slo), "--slo-profile", "short"),
        timeout=180,
        LOADTEST_MIX="ApiClient=2,CredentialStuffer=1,PasswordSprayer=1",
        # One stuffer (5 attempts/s) on two addresses reaches the default 30/minute of each
        # in 12 s; one sprayer on two names (one account, one unknown) uses up their 5 free
        # failures in 2 s. Both stay far below the hashing capacity, so the figures hold on
        # a busy CI machine too.
        LOADTEST_STUFFING_ADDRESSES="2",
        LOADTEST_SPRAYING_ACCOUNTS="1",
    )
    assert result.returncode == 0, explain(result)
    assert "FAIL" not in (reports / "gates.txt").read_text()

    with (reports / "locust_stats.csv").open(newline="") as stats:
        requests = {row["Name"]: int(row["Request Count"]) for row in csv.DictReader(stats)}
    assert requests[names.STUFFING + names.RATE_LIMITED] > 0, requests
    assert requests[names.SPRAYING + names.THROTTLED] > 0, requests
    assert requests.get(names.STUFFING + names.LOGGED_IN, 0) == 0
    assert requests.get(names.SPRAYING + names.LOGGED_IN, 0) == 0
    assert requests[names.ME] > 0  # the legitimate clients ran, and without an error

    # The service counted the refusals too, under the metrics the alerts watch (at least
    # as many: attempts still in flight when Locust stopped are answered but not recorded).
    metrics = (reports / "service-metrics.txt").read_text()
    assert counters(metrics, RATE_LIMITED, "route")["login"] >= requests[names.STUFFING + names.RATE_LIMITED]
    throttled = requests[names.SPRAYING + names.THROTTLED] + requests.get(names.STUFFING + names.THROTTLED, 0)
    assert counters(metrics, LOGIN_ATTEMPTS, "result")["throttled"] >= throttled
    assert "refused by the per-address rate limit: login" in result.stdout
