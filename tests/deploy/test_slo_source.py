"""The one SLO source (deploy/slo/slos.yml) and what is rendered from it.

Drift of the generated files is checked with every other generated file
(test_k8s_generated_copies.py); here: the spec is read strictly, every SLO reaches every
consumer, and the time-scaled rules are the production logic with shorter windows.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from deploy.grafana.generate import rendered as rendered_dashboards
from deploy.slo import scaled
from deploy.slo.generate import OBJECTIVES_FILE, RULES_FILE, TESTS_FILE
from deploy.slo.spec import SPEC_FILE, TIERS, WINDOWS, SpecError, load, seconds
from loadtests.gates import load_objectives
from tests.deploy.artifacts import require_tool

SPEC = load()
SPEC_EVENTS = yaml.safe_load(SPEC_FILE.read_text())["slos"][0]["sli"]["events"]


def spec_with(change: dict[str, Any], tmp_path: Path) -> Path:
    raw = yaml.safe_load(SPEC_FILE.read_text())
    raw["slos"][0].update(change)
    path = tmp_path / "slos.yml"
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"objective": 92}, "cannot burn"),
        ({"sli": {"events": SPEC_EVENTS, "raw": {"error_ratio_query": "x"}}}, "does not implement"),
        (
            {"sli": {"events": {"error_query": "sum(rate(x[5m]))", "total_query": "sum(rate(y[{{.window}}]))"}}},
            "placeholder",
        ),
        ({"x-record": "Bad-Name"}, "lower-case"),
        ({"x-loadtest": {"percentile_of": ["POST /api/v1/auth/login"], "threshold_ms": 500}}, "threshold_ms"),
    ],
)
def test_the_spec_is_read_strictly(change: dict[str, Any], message: str, tmp_path: Path) -> None:
    with pytest.raises(SpecError, match=message):
        load(spec_with(change, tmp_path))


def test_every_slo_reaches_the_rules_the_tests_the_dashboards_and_the_load_tests() -> None:
    rules = yaml.safe_load(RULES_FILE.read_text())
    alerts = {(r["alert"], r["labels"]["burn_rate"]) for g in rules["groups"] for r in g["rules"] if "alert" in r}
    records = {r["record"] for g in rules["groups"] for r in g["rules"] if "record" in r}
    tests = TESTS_FILE.read_text()
    dashboards = "\n".join(rendered_dashboards().values())
    objectives = load_objectives(OBJECTIVES_FILE)
    for slo in SPEC.slos:
        assert {(slo.alert_name, t.burn_label) for t in TIERS} <= alerts
        assert {slo.rule("ratio", w) for w in WINDOWS} <= records
        assert slo.alert_name in tests
        assert slo.rule("errors", "5m") in dashboards
        assert json.dumps(f"{slo.name} error budget remaining (30 d)") in dashboards
        # A Locust run sees HTTP answers only: an SLO of something else (mail) has no gate.
        assert (slo.name in objectives) == bool(slo.loadtest.error_and_shed_ratio_max or slo.loadtest.percentile_of)
    assert "mail-delivery" not in objectives
    availability = SPEC.by_name("availability")
    assert objectives["availability"].error_and_shed_ratio_max == availability.budget == 0.001
    assert objectives["login-latency"].percentile == 99


def rule_by_name(document: dict[str, Any], name: str, **labels: str) -> dict[str, Any]:
    for group in document["groups"]:
        for rule in group["rules"]:
            if name in (rule.get("record"), rule.get("alert")) and labels.items() <= rule.get("labels", {}).items():
                return dict(rule)
    raise AssertionError(f"no rule {name} {labels}")


def test_time_scaled_rules_keep_names_and_labels_and_shorten_every_window(tmp_path: Path) -> None:
    slo_file, causes_file, probes_file = scaled.write(tmp_path, 60)
    production = yaml.safe_load(RULES_FILE.read_text())
    fast = yaml.safe_load(slo_file.read_text())
    availability = SPEC.by_name("availability")
    page = rule_by_name(fast, availability.alert_name, burn_rate="14.4")
    assert page["for"] == "2s"
    assert page["labels"] == rule_by_name(production, availability.alert_name, burn_rate="14.4")["labels"]
    assert "[1m]" in rule_by_name(fast, availability.rule("ratio", "1h"))["expr"]
    assert "[72m]" in rule_by_name(fast, availability.rule("ratio", "3d"))["expr"]
    causes = yaml.safe_load(causes_file.read_text())
    readiness = rule_by_name(causes, "instance:user_service_readiness_failing:bool")
    # 2m would be 2 s, one or two scrapes: no window holds fewer than four.
    assert "[4s]" in readiness["expr"]
    assert "[2m]" not in readiness["expr"]
    down = rule_by_name(causes, "UserServiceDown")
    assert seconds(down["for"]) < 60
    # The guard's count is the scaled window's: rate over [1m] times 60 s.
    assert ") * 60 >= 5" in page["expr"]
    probe_failing = rule_by_name(yaml.safe_load(probes_file.read_text()), "UserServiceProbeFailing")
    assert "[4s]" in probe_failing["expr"]
    result = subprocess.run(
        [require_tool("promtool"), "check", "rules", str(slo_file), str(causes_file), str(probes_file)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_scaling_rewrites_ranges_subqueries_offsets_and_marked_seconds_only() -> None:
    expr = 'rate(x{le="0.25"}[5m]) > 2 * avg_over_time(y[1h:1m] offset 7d) and z > 600\nand age > 600  # seconds'
    assert scaled.scale_expr(expr, 60) == (
        'rate(x{le="0.25"}[5s]) > 2 * avg_over_time(y[1m:1s] offset 168m) and z > 600\nand age > 10  # seconds'
    )
    # A window keeps four scrapes of the tests' 1 s interval, and an offset (which pairs
    # with a window) the same floor; a subquery's step is no window.
    assert scaled.scale_expr("increase(x[2m]) > 0 unless x offset 2m and max_over_time(y[1m:1m])", 60) == (
        "increase(x[4s]) > 0 unless x offset 4s and max_over_time(y[4s:1s])"
    )
