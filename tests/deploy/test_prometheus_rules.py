"""The Prometheus configuration and rules: promtool accepts them and their unit tests pass,
every alert is unit-tested firing and not firing, carries what an on-call engineer needs
(severity, summary, description, absolute links to a runbook section and a dashboard panel
that exist), and reads only metrics the service exports."""

from __future__ import annotations

import json
import re
import subprocess
from urllib.parse import parse_qs, urlsplit

import pytest
import yaml

from tests.deploy.artifacts import (
    DASHBOARDS_DIR,
    FOREIGN_RULE_GROUPS,
    PROMETHEUS_CONFIG,
    PROMETHEUS_SYNTHETIC,
    ROOT,
    RULE_TESTS_DIR,
    RULES_FILES,
    RUNBOOK,
    Rule,
    catalogue_series,
    load_alert_cases,
    load_rules,
    metric_names,
    recording_rule_names,
    require_tool,
)

# The setting the links are built from, read as an adopter writes it.
LINKS = {
    key: str(value).rstrip("/") for key, value in yaml.safe_load((ROOT / "deploy" / "links.yml").read_text()).items()
}


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [require_tool("promtool"), *args], cwd=ROOT, capture_output=True, text=True, timeout=120, check=False
    )


def alerts() -> list[Rule]:
    return [rule for rule in load_rules() if rule.alert]


def test_promtool_accepts_the_config_and_the_rules_it_loads() -> None:
    result = promtool("check", "config", str(PROMETHEUS_CONFIG))
    assert result.returncode == 0, result.stdout + result.stderr
    # The config's rule_files glob must really find the rules files (a wrong glob is not an error).
    for rules_file in RULES_FILES:
        assert str(rules_file.relative_to(PROMETHEUS_CONFIG.parent)) in result.stdout + result.stderr


def test_promtool_check_rules() -> None:
    result = promtool("check", "rules", *(str(path) for path in RULES_FILES))
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_unit_tests_pass() -> None:
    files = sorted(str(path) for path in RULE_TESTS_DIR.glob("*.yml"))
    assert files, f"no promtool unit tests in {RULE_TESTS_DIR}"
    result = promtool("test", "rules", *files)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "FAILED" not in result.stdout + result.stderr


def test_every_alert_is_unit_tested_firing_and_not_firing() -> None:
    """Each alert rule (alert name plus its static labels, so each burn-rate tier on its own)
    has a promtool case where it is expected to fire and one where it is expected silent."""
    cases = load_alert_cases()
    missing: list[str] = []
    for rule in alerts():
        ours = [case for case in cases if case.alertname == rule.alert]

        def matches(expected: dict[str, str], rule: Rule = rule) -> bool:
            return all(expected.get(key) == value for key, value in rule.labels.items())

        fires = any(any(matches(labels) for labels in case.expected_labels) for case in ours)
        stays_silent = any(not any(matches(labels) for labels in case.expected_labels) for case in ours)
        tier = f"{rule.alert} {rule.labels}"
        if not fires:
            missing.append(f"{tier}: no case where it fires")
        # The Watchdog fires always, by design: there is no quiet case to write.
        if not stays_silent and rule.alert != "UserServiceWatchdog":
            missing.append(f"{tier}: no case where it stays silent")
    assert not missing, "\n".join(missing)


def github_anchor(heading: str) -> str:
    """The fragment GitHub gives a Markdown heading."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_every_alert_has_severity_summary_description_and_an_existing_runbook_section() -> None:
    anchors = {github_anchor(line.lstrip("#")) for line in RUNBOOK.read_text().splitlines() if line.startswith("#")}
    problems: list[str] = []
    for rule in alerts():
        name = rule.alert
        # The usual severities for routing trees that match on them, and page or ticket
        # beside them, saying the same, for trees that route on urgency.
        allowed = {("none", None)} if name == "UserServiceWatchdog" else {("critical", "page"), ("warning", "ticket")}
        severity = (rule.labels.get("severity"), rule.labels.get("urgency"))
        if severity not in allowed:
            problems.append(f"{name}: (severity, urgency) must be one of {sorted(map(str, allowed))}, is {severity}")
        problems.extend(
            f"{name}: no {key} annotation"
            for key in ("summary", "description", "runbook_url", "dashboard_url")
            if not rule.annotations.get(key, "").strip()
        )
        url = rule.annotations.get("runbook_url", "")
        path, _, anchor = url.partition("#")
        if path != LINKS["runbook"] or anchor != str(name).lower():
            problems.append(f"{name}: runbook_url should be {LINKS['runbook']}#{str(name).lower()}, is {url!r}")
        elif anchor not in anchors:
            problems.append(f"{name}: docs/runbook.md has no section #{anchor}")
    assert not problems, "\n".join(problems)


def test_every_alert_links_a_panel_of_a_committed_dashboard() -> None:
    """Absolute, under the Grafana of deploy/links.yml, to a dashboard and panel that exist."""
    panels: dict[str, dict[int, str]] = {}
    for path in DASHBOARDS_DIR.glob("*.json"):
        dashboard = json.loads(path.read_text())
        stack, ids = list(dashboard["panels"]), {}
        while stack:
            panel = stack.pop()
            ids[panel["id"]] = panel["title"]
            stack.extend(panel.get("panels", []))
        panels[dashboard["uid"]] = ids
    problems: list[str] = []
    for rule in alerts():
        url = urlsplit(rule.annotations.get("dashboard_url", ""))
        base, _, uid = f"{url.scheme}://{url.netloc}{url.path}".rpartition("/d/")
        view = parse_qs(url.query).get("viewPanel", [])
        if base != LINKS["grafana"] or uid not in panels:
            problems.append(
                f"{rule.alert}: {rule.annotations.get('dashboard_url')!r} is no dashboard under {LINKS['grafana']}"
            )
        elif view and int(view[0]) not in panels[uid]:
            problems.append(f"{rule.alert}: dashboard {uid} has no panel {view[0]}")
    assert not problems, "\n".join(problems)


def test_rules_read_only_exported_metrics_and_recording_rules() -> None:
    allowed = catalogue_series() | recording_rule_names() | PROMETHEUS_SYNTHETIC
    unknown = {
        f"{rule.record or rule.alert}: {name}"
        for rule in load_rules()
        for name in metric_names(rule.expr)
        if not (rule.group in FOREIGN_RULE_GROUPS and name in FOREIGN_RULE_GROUPS[rule.group][1])
    }
    unknown = {entry for entry in unknown if entry.rsplit(": ", 1)[1] not in allowed}
    assert not unknown, "metrics not in docs/observability.md:\n" + "\n".join(sorted(unknown))


def test_rules_select_the_user_service_job() -> None:
    """Every series selector in every rule names job="user-service" (a rule without it would
    mix in other services' series of the same name); the database's and the outside-in
    probe's rules name their own jobs."""
    selector = re.compile(r"\b([a-zA-Z_:][a-zA-Z0-9_:]*)\{([^}]*)\}")
    offenders = [
        f"{rule.record or rule.alert}: {match.group(0)}"
        for rule in load_rules()
        for match in selector.finditer(rule.expr)
        if f'job="{FOREIGN_RULE_GROUPS.get(rule.group, ("user-service",))[0]}"' not in match.group(2)
    ]
    assert not offenders, "\n".join(offenders)


@pytest.mark.parametrize(
    ("expr", "names"),
    [
        ('sum by (job) (rate(a_total{job="x",le="0.25"}[5m])) / on (job) b', {"a_total", "b"}),
        ("histogram_quantile(0.99, sum by (le) (rate(c_bucket[$__rate_interval]))) or vector(0)", {"c_bucket"}),
        ("x unless x offset 5m > bool 1e3", {"x"}),
        ("y  # a comment naming no_metric\n+ z", {"y", "z"}),
        ("job:some_rule:ratio_rate5m > (14.4 * 0.001)", {"job:some_rule:ratio_rate5m"}),
    ],
)
def test_the_metric_name_reader_finds_names_and_nothing_else(expr: str, names: set[str]) -> None:
    # The allow-list checks above are only as good as this reader: an unknown name must be seen.
    assert metric_names(expr) == names
