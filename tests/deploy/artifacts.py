"""Reading the monitoring artifacts under deploy/ for the tests: the metric catalogue of
docs/observability.md, the Prometheus rules, the promtool unit tests and the dashboards."""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from deploy.grafana.dependencies import EXPORTER_SERIES
from loadtests.locust_series import SERIES as LOCUST_SERIES

ROOT = Path(__file__).resolve().parents[2]
CATALOGUE = ROOT / "docs" / "observability.md"
RUNBOOK = ROOT / "docs" / "runbook.md"
PROMETHEUS_DIR = ROOT / "deploy" / "prometheus"
PROMETHEUS_CONFIG = PROMETHEUS_DIR / "prometheus.yml"
RULES_FILE = PROMETHEUS_DIR / "rules" / "user-service.rules.yml"
# Generated from deploy/slo/slos.yml; Prometheus loads both through its rule_files glob.
SLO_RULES_FILE = PROMETHEUS_DIR / "rules" / "user-service-slo.rules.yml"
# The database's alerts (CloudNativePG's exporter and the Barman Cloud plugin, job
# user-service-db), rendered into the prod overlay only.
DATABASE_RULES_FILE = PROMETHEUS_DIR / "rules" / "user-service-database.rules.yml"
DATABASE_RULE_GROUP = "user-service-database"
DATABASE_JOB = "user-service-db"
# The series those alerts read: CloudNativePG's predefined pg_stat_archiver and
# pg_replication queries (its default-monitoring ConfigMap, prefixed cnpg_) and the Barman
# Cloud plugin's own metrics (its "Observability" page), on the instances' exporter.
DATABASE_SERIES = frozenset(
    {
        "cnpg_pg_stat_archiver_last_archived_time",
        "cnpg_pg_stat_archiver_last_failed_time",
        "cnpg_pg_replication_lag",
        "barman_cloud_cloudnative_pg_io_last_available_backup_timestamp",
        "barman_cloud_cloudnative_pg_io_last_failed_backup_timestamp",
    }
)
# The outside-in probe's alerts (a blackbox exporter's answers, job user-service-probe).
PROBE_RULES_FILE = PROMETHEUS_DIR / "rules" / "user-service-probes.rules.yml"
PROBE_RULE_GROUP = "user-service-probes"
PROBE_JOB = "user-service-probe"
# What the blackbox exporter reports for each probe (its prober/http.go and probe metrics).
PROBE_SERIES = frozenset({"probe_success", "probe_ssl_earliest_cert_expiry"})
# The containers' alerts: cAdvisor's series through the kubelet, kube-state-metrics'.
KUBERNETES_RULES_FILE = PROMETHEUS_DIR / "rules" / "user-service-kubernetes.rules.yml"
CONTAINER_SERIES = frozenset(
    {
        "container_cpu_cfs_periods_total",
        "container_cpu_cfs_throttled_periods_total",
        "container_memory_working_set_bytes",
        "container_spec_memory_limit_bytes",
    }
)
KUBE_STATE_SERIES = frozenset(
    {
        "kube_pod_container_status_restarts_total",
        "kube_pod_container_status_last_terminated_reason",
        "kube_pod_container_status_waiting_reason",
        "kube_horizontalpodautoscaler_status_current_replicas",
        "kube_horizontalpodautoscaler_spec_max_replicas",
    }
)
RULES_FILES = (SLO_RULES_FILE, RULES_FILE, PROBE_RULES_FILE, KUBERNETES_RULES_FILE, DATABASE_RULES_FILE)
# Rule groups that read another job's series than the service's: the job every selector
# names and the series they may read beside the service's catalogue.
FOREIGN_RULE_GROUPS = {
    DATABASE_RULE_GROUP: (DATABASE_JOB, DATABASE_SERIES),
    PROBE_RULE_GROUP: (PROBE_JOB, PROBE_SERIES),
    "user-service-containers": ("kubelet", CONTAINER_SERIES),
    "user-service-kube-state": ("kube-state-metrics", KUBE_STATE_SERIES),
}
LOAD_TEST_DASHBOARD = "load-test.json"
DEPENDENCIES_DASHBOARD = "dependencies.json"
RULE_TESTS_DIR = PROMETHEUS_DIR / "tests"
DASHBOARDS_DIR = ROOT / "deploy" / "grafana" / "dashboards"

# Series Prometheus makes itself for every target; rules may use them, dashboards do not.
PROMETHEUS_SYNTHETIC = frozenset({"up"})
# Suffixes of the series a histogram is exposed as.
HISTOGRAM_SERIES = ("_bucket", "_count", "_sum")


def require_tool(name: str) -> str:
    """The tool's path, or a failure (never a skip: CI must run these checks)."""
    path = shutil.which(name)
    if path is None:
        pytest.fail(
            f"`{name}` is not installed. .ci/run (through scripts/test) must install Debian's "
            "prometheus package (prometheus, promtool) and prometheus-alertmanager (it, amtool)."
        )
    return path


# --- the metric catalogue ------------------------------------------------------------------


def catalogue_series() -> frozenset[str]:
    """Every series name the service exports according to docs/observability.md's table."""
    names: set[str] = set()
    row = re.compile(r"^\|\s*`(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)`\s*\|\s*(?P<type>\w+)\s*\|")
    for line in CATALOGUE.read_text().splitlines():
        if (match := row.match(line)) is None:
            continue
        name, kind = match["name"], match["type"]
        if kind == "histogram":
            names.update(name + suffix for suffix in HISTOGRAM_SERIES)
        elif kind in {"counter", "gauge"}:
            names.add(name)
        else:
            raise AssertionError(f"unknown metric type {kind!r} for {name} in {CATALOGUE}")
    assert len(names) > 20, f"could not read the metric table of {CATALOGUE}"
    return frozenset(names)


# --- PromQL --------------------------------------------------------------------------------

_KEYWORDS = frozenset(
    {"and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring", "group_left", "group_right", "atan2"}
)
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_TOKEN = re.compile(r"(?P<number>\d[\w.]*)|(?P<name>[A-Za-z_:][A-Za-z0-9_:]*)(?P<call>\s*\()?")


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression reads (not functions, keywords or label names).

    Good enough for the expressions of this repository: strings, comments, label matchers,
    ranges and grouping clauses are removed first, then every remaining identifier that is not a call
    is a metric name.
    """
    text = _STRING.sub('""', expr)
    text = re.sub(r"#[^\n]*", " ", text)  # PromQL comments
    text = re.sub(r"\{[^}]*\}", " ", text)
    text = re.sub(r"\[[^\]]*\]", " ", text)
    text = _GROUPING.sub(" ", text)
    names: set[str] = set()
    for token in _TOKEN.finditer(text):
        name = token["name"]
        if name is None or token["call"] or name.lower() in _KEYWORDS or name.lower() in {"inf", "nan"}:
            continue
        names.add(name)
    return names


# --- rules -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Rule:
    group: str
    expr: str
    record: str | None
    alert: str | None
    labels: dict[str, str]
    annotations: dict[str, str]


def _mapping(value: Any, where: str) -> dict[str, Any]:
    assert isinstance(value, dict), f"{where}: expected a mapping, got {type(value).__name__}"
    return value


def _list(value: Any, where: str) -> list[Any]:
    assert isinstance(value, list), f"{where}: expected a list, got {type(value).__name__}"
    return value


def _strings(value: Any, where: str) -> dict[str, str]:
    mapping = _mapping(value or {}, where)
    assert all(isinstance(v, str) for v in mapping.values()), f"{where}: values must be strings"
    return {str(k): str(v) for k, v in mapping.items()}


def load_rules(paths: tuple[Path, ...] = RULES_FILES) -> list[Rule]:
    rules: list[Rule] = []
    for path in paths:
        rules += _load_rule_file(path)
    return rules


def _load_rule_file(path: Path) -> list[Rule]:
    document = _mapping(yaml.safe_load(path.read_text()), str(path))
    rules: list[Rule] = []
    for raw_group in _list(document["groups"], "groups"):
        group = _mapping(raw_group, "group")
        for raw in _list(group["rules"], f"group {group['name']}"):
            rule = _mapping(raw, f"rule in {group['name']}")
            rules.append(
                Rule(
                    group=str(group["name"]),
                    expr=str(rule["expr"]),
                    record=rule.get("record"),
                    alert=rule.get("alert"),
                    labels=_strings(rule.get("labels"), f"labels of {rule}"),
                    annotations=_strings(rule.get("annotations"), f"annotations of {rule}"),
                )
            )
    return rules


def recording_rule_names() -> frozenset[str]:
    return frozenset(rule.record for rule in load_rules() if rule.record)


@dataclass(frozen=True, slots=True)
class AlertCase:
    """One alert_rule_test entry of a promtool unit test file."""

    file: str
    test: str
    alertname: str
    eval_time: str
    expected_labels: tuple[dict[str, str], ...]


def load_alert_cases() -> list[AlertCase]:
    cases: list[AlertCase] = []
    for path in sorted(RULE_TESTS_DIR.glob("*.yml")):
        document = _mapping(yaml.safe_load(path.read_text()), str(path))
        for raw_test in _list(document["tests"], f"{path}: tests"):
            test = _mapping(raw_test, str(path))
            for raw_case in _list(test.get("alert_rule_test") or [], f"{path}: alert_rule_test"):
                case = _mapping(raw_case, str(path))
                expected = tuple(
                    _strings(_mapping(alert, str(path)).get("exp_labels"), f"{path}: exp_labels")
                    for alert in _list(case.get("exp_alerts") or [], f"{path}: exp_alerts")
                )
                cases.append(
                    AlertCase(
                        file=path.name,
                        test=str(test.get("name", "")),
                        alertname=str(case["alertname"]),
                        eval_time=str(case["eval_time"]),
                        expected_labels=expected,
                    )
                )
    return cases


# --- dashboards ----------------------------------------------------------------------------


def load_dashboard(path: Path) -> dict[str, Any]:
    return _mapping(json.loads(path.read_text()), str(path))


def all_panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    """Every panel, including those nested in collapsed rows."""
    panels: list[dict[str, Any]] = []
    for panel in _list(dashboard.get("panels", []), "panels"):
        panels.append(_mapping(panel, "panel"))
        panels.extend(_mapping(p, "panel") for p in _list(panel.get("panels", []), "row panels"))
    return panels


@dataclass(frozen=True, slots=True)
class PanelQuery:
    dashboard: str
    panel: str
    expr: str


def reads_locust(query: PanelQuery) -> bool:
    """A query of the load generator's own series (loadtests/locust_metrics.py), which
    exist only while a Locust run serves them: proven by tests/loadtests/, not here."""
    return bool(metric_names(query.expr) & LOCUST_SERIES)


def reads_exporters(query: PanelQuery) -> bool:
    """A query of PostgreSQL's or Redis's exporter, proven by test_dependency_dashboards.py."""
    return bool(metric_names(query.expr) & EXPORTER_SERIES)


def dashboard_queries() -> list[PanelQuery]:
    """Every PromQL expression of every dashboard: panel targets and query variables."""
    queries: list[PanelQuery] = []
    for path in sorted(DASHBOARDS_DIR.glob("*.json")):
        dashboard = load_dashboard(path)
        queries.extend(
            PanelQuery(path.name, str(panel["title"]), str(target["expr"]))
            for panel in all_panels(dashboard)
            for target in panel.get("targets", [])
        )
        for variable in dashboard["templating"]["list"]:
            if variable["type"] == "query":
                query = variable["query"]
                definition = str(query["query"] if isinstance(query, dict) else query)
                # label_values(<series selector>, <label>) is answered from the selector's series.
                match = re.fullmatch(r"label_values\((?P<selector>.+),\s*\w+\)", definition)
                assert match, f"{path.name}: unexpected variable query {definition}"
                queries.append(PanelQuery(path.name, f"variable ${variable['name']}", match["selector"]))
    assert queries, f"no dashboards found in {DASHBOARDS_DIR}"
    return queries


# Values Grafana substitutes before a query reaches Prometheus. Every rate window in the
# dashboards is $__rate_interval; 1m spans plenty of 1 s scrapes in the end-to-end test.
DASHBOARD_VARIABLES = {"$__rate_interval": "1m", "$instance": ".*", "${instance}": ".*"}


def substitute_variables(expr: str) -> str:
    for variable, value in sorted(DASHBOARD_VARIABLES.items(), key=lambda item: -len(item[0])):
        expr = expr.replace(variable, value)
    assert "$" not in expr, f"unsubstituted dashboard variable in {expr}"
    return expr
