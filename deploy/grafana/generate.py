"""Grafana dashboards as code for the user service.

Renders deploy/grafana/dashboards/service-overview.json and auth.json from the panel
definitions below; the rendered JSON is committed next to this script, and a test fails
when they drift apart. Regenerate after any change:

    uv run python -m deploy.grafana.generate          # rewrite the JSON files
    uv run python -m deploy.grafana.generate --check  # exit 1 if they are stale

Every metric name comes from docs/observability.md or is a recording rule of
deploy/prometheus/rules/user-service.rules.yml (a test checks that too), and every
expression returns data against a real Prometheus scraping the service (another test).

Conventions:
- Datasources are variables: ``${datasource}`` (Prometheus) and ``${tempo}`` (traces), so
  the same JSON imports into any Grafana. Exemplar links to traces come from the Prometheus
  datasource's ``exemplarTraceIdDestinations`` (label ``trace_id``, pointing at the Tempo
  datasource; deploy/grafana/provisioning/datasources/ shows it), and the latency
  panels ask for exemplars.
- ``$instance`` filters every per-instance query; SLO panels are service-wide.
- A counter with labels has no series until its first increment (a service that has shed
  nothing has no rejection series at all), so such panels end in ``or vector(0)``: an SRE
  must be able to tell "zero" from "no data".
"""

from __future__ import annotations

import argparse
import json
import sys
import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

JSON = dict[str, Any]

DASHBOARDS_DIR = Path(__file__).resolve().parent / "dashboards"

# The scrape job every rule and panel selects (deploy/prometheus/prometheus.yml).
JOB = 'job="user-service"'
INSTANCE = 'instance=~"$instance"'
# SLOs, as in the rules file and docs/runbook.md.
AVAILABILITY_BUDGET = 0.001  # 99.9 % of API requests answered without a 5xx
LOGIN_LATENCY_BUDGET = 0.01  # 99 % of logins under LOGIN_THRESHOLD_SECONDS
LOGIN_THRESHOLD_SECONDS = 0.25
LOGIN_ROUTE = 'http_request_method="POST", http_route="/api/v1/auth/login"'

PROMETHEUS = {"type": "prometheus", "uid": "${datasource}"}
SCHEMA_VERSION = 39
QUANTILES = (0.5, 0.95, 0.99)


def sel(*matchers: str, instance: bool = True) -> str:
    """A label selector for the service's own series, per instance unless told otherwise."""
    parts = [JOB, INSTANCE] if instance else [JOB]
    return "{" + ", ".join([*parts, *matchers]) + "}"


def or_zero(expr: str) -> str:
    return f"{expr} or vector(0)"


# --- panel model -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Target:
    expr: str
    legend: str = "__auto"
    # Ask Grafana to fetch exemplars (trace ids) for this query: only the HTTP duration
    # histogram carries them.
    exemplar: bool = False


@dataclass(frozen=True, slots=True)
class Threshold:
    value: float | None  # None: the base colour
    color: str


@dataclass(frozen=True, slots=True)
class Panel:
    title: str
    description: str
    targets: tuple[Target, ...]
    unit: str = "short"
    kind: str = "timeseries"  # or "stat"
    width: int = 12
    height: int = 8
    minimum: float | None = 0
    maximum: float | None = None
    decimals: int | None = None
    stacked: bool = False
    # Drawn as dashed lines on time series (alert thresholds), as colours on stats.
    thresholds: tuple[Threshold, ...] = ()


@dataclass(frozen=True, slots=True)
class Row:
    title: str
    panels: tuple[Panel, ...]


@dataclass(frozen=True, slots=True)
class Dashboard:
    uid: str
    title: str
    description: str
    filename: str
    rows: tuple[Row, ...]


# --- rendering -------------------------------------------------------------------------


def _target(target: Target, ref_id: str) -> JSON:
    return {
        "datasource": PROMETHEUS,
        "editorMode": "code",
        "exemplar": target.exemplar,
        "expr": target.expr,
        "instant": False,
        "legendFormat": target.legend,
        "range": True,
        "refId": ref_id,
    }


def _thresholds(panel: Panel) -> JSON:
    steps: list[JSON] = [{"color": "green", "value": None}]
    if panel.thresholds:
        steps = [{"color": t.color, "value": t.value} for t in panel.thresholds]
    return {"mode": "absolute", "steps": steps}


def _field_config(panel: Panel) -> JSON:
    defaults: JSON = {"unit": panel.unit, "thresholds": _thresholds(panel)}
    if panel.minimum is not None:
        defaults["min"] = panel.minimum
    if panel.maximum is not None:
        defaults["max"] = panel.maximum
    if panel.decimals is not None:
        defaults["decimals"] = panel.decimals
    if panel.kind == "timeseries":
        defaults["color"] = {"mode": "palette-classic"}
        defaults["custom"] = {
            "drawStyle": "line",
            "lineWidth": 1,
            "fillOpacity": 20 if panel.stacked else 0,
            "showPoints": "never",
            "spanNulls": False,
            "stacking": {"mode": "normal" if panel.stacked else "none", "group": "A"},
            "thresholdsStyle": {"mode": "dashed" if panel.thresholds else "off"},
        }
    else:
        defaults["color"] = {"mode": "thresholds"}
    return {"defaults": defaults, "overrides": []}


def _options(panel: Panel) -> JSON:
    if panel.kind == "stat":
        return {
            "colorMode": "background",
            "graphMode": "none",
            "justifyMode": "auto",
            "orientation": "auto",
            "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
            "textMode": "auto",
        }
    return {
        "legend": {"calcs": ["mean", "max"], "displayMode": "table", "placement": "bottom", "showLegend": True},
        "tooltip": {"mode": "multi", "sort": "desc"},
    }


def _panel(panel: Panel, panel_id: int, x: int, y: int) -> JSON:
    return {
        "datasource": PROMETHEUS,
        "description": panel.description,
        "fieldConfig": _field_config(panel),
        "gridPos": {"h": panel.height, "w": panel.width, "x": x, "y": y},
        "id": panel_id,
        "options": _options(panel),
        "targets": [_target(t, chr(ord("A") + i)) for i, t in enumerate(panel.targets)],
        "title": panel.title,
        "type": panel.kind,
    }


def _layout(rows: Sequence[Row]) -> list[JSON]:
    """Rows one under the other; panels fill a row left to right on Grafana's 24-column grid."""
    panels: list[JSON] = []
    next_id = 1
    y = 0
    for row in rows:
        panels.append(
            {
                "collapsed": False,
                "gridPos": {"h": 1, "w": 24, "x": 0, "y": y},
                "id": next_id,
                "panels": [],
                "title": row.title,
                "type": "row",
            }
        )
        next_id += 1
        y += 1
        x = 0
        line_height = 0
        for panel in row.panels:
            if x + panel.width > 24:
                x, y, line_height = 0, y + line_height, 0
            panels.append(_panel(panel, next_id, x, y))
            next_id += 1
            x += panel.width
            line_height = max(line_height, panel.height)
        y += line_height
    return panels


def _templating() -> JSON:
    def datasource(name: str, label: str, plugin: str) -> JSON:
        return {
            "current": {},
            "hide": 0,
            "includeAll": False,
            "label": label,
            "multi": False,
            "name": name,
            "options": [],
            "query": plugin,
            "refresh": 1,
            "regex": "",
            "type": "datasource",
        }

    instances = f"label_values(user_service_build_info{sel(instance=False)}, instance)"
    return {
        "list": [
            datasource("datasource", "Prometheus", "prometheus"),
            datasource("tempo", "Traces", "tempo"),
            {
                "allValue": ".*",
                "current": {},
                "datasource": PROMETHEUS,
                "definition": instances,
                "hide": 0,
                "includeAll": True,
                "label": "Instance",
                "multi": True,
                "name": "instance",
                "options": [],
                "query": {"query": instances, "refId": "PrometheusVariableQueryEditor-VariableQuery"},
                "refresh": 2,
                "regex": "",
                "sort": 1,
                "type": "query",
            },
        ]
    }


def _links() -> list[JSON]:
    explore = json.dumps({"datasource": "${tempo}", "queries": [{"refId": "A"}]}, separators=(",", ":"))
    return [
        {
            "asDropdown": False,
            "icon": "external link",
            "includeVars": False,
            "keepTime": True,
            "tags": ["user-service"],
            "targetBlank": False,
            "title": "User service",
            "type": "dashboards",
        },
        {
            "icon": "external link",
            "keepTime": True,
            "targetBlank": True,
            "title": "Traces",
            "tooltip": "Explore the service's traces in the ${tempo} datasource",
            "type": "link",
            "url": "/explore?left=" + urllib.parse.quote(explore, safe="${}"),
        },
    ]


def render(dashboard: Dashboard) -> JSON:
    return {
        "annotations": {
            "list": [
                {
                    "builtIn": 1,
                    "datasource": {"type": "grafana", "uid": "-- Grafana --"},
                    "enable": True,
                    "hide": True,
                    "iconColor": "rgba(0, 211, 255, 1)",
                    "name": "Annotations & Alerts",
                    "type": "dashboard",
                }
            ]
        },
        "description": dashboard.description,
        "editable": True,
        "graphTooltip": 1,
        "links": _links(),
        "panels": _layout(dashboard.rows),
        "refresh": "30s",
        "schemaVersion": SCHEMA_VERSION,
        "tags": ["user-service"],
        "templating": _templating(),
        "time": {"from": "now-6h", "to": "now"},
        "timepicker": {},
        "timezone": "utc",
        "title": dashboard.title,
        "uid": dashboard.uid,
        "version": 1,
    }


def to_text(dashboard: Dashboard) -> str:
    return json.dumps(render(dashboard), indent=2, ensure_ascii=False) + "\n"


# --- shared panels -------------------------------------------------------------------------

RATE = "[$__rate_interval]"
HTTP_COUNT = "http_server_request_duration_seconds_count"
HTTP_BUCKET = "http_server_request_duration_seconds_bucket"
NOT_PROBES = 'http_route!~"/health/.*"'
FIVE_XX = 'http_response_status_code=~"5.."'
NOT_5XX = 'http_response_status_code!~"5.."'
FAILED_LOGIN = 'result!="success"'


def hashing_saturation() -> Panel:
    return Panel(
        title="Hashing pool saturation",
        description=(
            "Share of the argon2 worker threads busy (running / workers), averaged over the rate interval. "
            "Near 100 % the pool is at its ceiling (about cores / 57 ms logins per second at default "
            "parameters); with hashes also waiting, UserServiceHashingPoolSaturated fires."
        ),
        targets=(
            Target(
                f"sum by (instance) (avg_over_time(user_service_password_hash_running{sel()}{RATE}))\n"
                f"/\nsum by (instance) (user_service_password_hash_workers{sel()})",
                "{{instance}}",
            ),
        ),
        unit="percentunit",
        maximum=1,
        thresholds=(Threshold(None, "green"), Threshold(0.9, "red")),
    )


def hashing_queue() -> Panel:
    return Panel(
        title="Hashing queue depth",
        description=(
            "Hashes waiting for a worker, and how many may wait before the next one is shed with 503. "
            "A queue that keeps coming back means logins wait for each other."
        ),
        targets=(
            Target(f"sum by (instance) (user_service_password_hash_queue_depth{sel()})", "{{instance}} waiting"),
            Target(
                f"sum by (instance) (user_service_password_hash_queue_capacity{sel()})",
                "{{instance}} capacity (503 beyond)",
            ),
        ),
    )


def hashing_rejections() -> Panel:
    return Panel(
        title="Hashes shed (503)",
        description=(
            "Hashes and verifies refused because the pool and its queue were full; each is a login or "
            "registration answered 503 with Retry-After (UserServiceHashingRejections)."
        ),
        targets=(
            Target(
                or_zero(
                    f"sum by (instance, operation) (rate(user_service_password_hash_rejections_total{sel()}{RATE}))"
                ),
                "{{instance}} {{operation}}",
            ),
        ),
        unit="ops",
    )


def latency_quantile(q: float) -> Panel:
    return Panel(
        title=f"p{round(q * 100)} latency by route",
        description=(
            f"{round(q * 100)}th percentile of request duration per route template (health probes left out), "
            "interpolated within histogram buckets. Exemplar dots link to the trace of a request."
        ),
        targets=(
            Target(
                f"histogram_quantile({q}, sum by (http_route, le) (rate({HTTP_BUCKET}{sel(NOT_PROBES)}{RATE})))",
                "{{http_route}}",
                exemplar=True,
            ),
        ),
        unit="s",
        width=8,
    )


# --- service overview ------------------------------------------------------------------------


def budget_remaining(title: str, bad: str, total: str, budget: float, description: str) -> Panel:
    job = sel(instance=False)
    return Panel(
        title=title,
        description=description,
        targets=(
            Target(
                f"1 - (\n  sum_over_time({bad}{job}[30d])\n  /\n  sum_over_time({total}{job}[30d])\n) / {budget}",
                "remaining",
            ),
        ),
        kind="stat",
        unit="percentunit",
        width=8,
        height=5,
        minimum=None,
        decimals=1,
        thresholds=(Threshold(None, "red"), Threshold(0, "orange"), Threshold(0.25, "green")),
    )


def burn_rate(title: str, ratio: str, budget: float, description: str) -> Panel:
    job = sel(instance=False)
    return Panel(
        title=title,
        description=description,
        targets=tuple(
            Target(f"{ratio}{window}{job} / {budget}", f"{window} window") for window in ("5m", "1h", "6h", "3d")
        ),
        unit="x",
        thresholds=(Threshold(None, "green"), Threshold(1, "yellow"), Threshold(6, "orange"), Threshold(14.4, "red")),
    )


def service_overview() -> Dashboard:
    slo = Row(
        "Service level objectives",
        (
            budget_remaining(
                "Availability error budget remaining (30 d)",
                "job:user_service_api_errors:rate5m",
                "job:user_service_api_requests:rate5m",
                AVAILABILITY_BUDGET,
                "SLO: 99.9 % of API requests (/api/...) answered without a 5xx over 30 days; 503 sheds count as "
                "failures. 100 % = no budget spent, 0 % = SLO missed. Computed from recording rules over the "
                "last 30 days (or over the Prometheus retention, if shorter).",
            ),
            budget_remaining(
                "Login latency error budget remaining (30 d)",
                "job:user_service_login_slow:rate5m",
                "job:user_service_login_requests:rate5m",
                LOGIN_LATENCY_BUDGET,
                f"SLO: 99 % of POST /api/v1/auth/login answers (5xx left out) faster than "
                f"{LOGIN_THRESHOLD_SECONDS} s over 30 days. docs/runbook.md explains the threshold.",
            ),
            Panel(
                title="Availability (30 d)",
                description="Share of API requests answered without a 5xx over the last 30 days; the SLO is 99.9 %.",
                targets=(
                    Target(
                        f"1 - (\n  sum_over_time(job:user_service_api_errors:rate5m{sel(instance=False)}[30d])\n  /\n"
                        f"  sum_over_time(job:user_service_api_requests:rate5m{sel(instance=False)}[30d])\n)",
                        "availability",
                    ),
                ),
                kind="stat",
                unit="percentunit",
                width=8,
                height=5,
                minimum=None,
                decimals=3,
                thresholds=(Threshold(None, "red"), Threshold(0.999, "green")),
            ),
            burn_rate(
                "Availability burn rate",
                "job:user_service_availability_errors:ratio_rate",
                AVAILABILITY_BUDGET,
                "5xx ratio of API requests divided by the 0.1 % budget: 1x spends the 30-day budget in exactly "
                "30 days. Pages at 14.4x (1h and 5m) and 6x (6h and 30m), tickets at 3x and 1x.",
            ),
            burn_rate(
                "Login latency burn rate",
                "job:user_service_login_slow:ratio_rate",
                LOGIN_LATENCY_BUDGET,
                f"Share of logins slower than {LOGIN_THRESHOLD_SECONDS} s divided by the 1 % budget. Same tiers as "
                "availability.",
            ),
        ),
    )
    traffic = Row(
        "Traffic, errors and latency by route",
        (
            Panel(
                title="Request rate by route",
                description="Requests per second by route template and method (health probes left out).",
                targets=(
                    Target(
                        f"sum by (http_route, http_request_method) (rate({HTTP_COUNT}{sel(NOT_PROBES)}{RATE}))",
                        "{{http_request_method}} {{http_route}}",
                    ),
                ),
                unit="reqps",
                width=8,
            ),
            Panel(
                title="5xx ratio by route",
                description=(
                    "Share of each route's answers that were 5xx (503 sheds included). Routes without any 5xx show 0."
                ),
                targets=(
                    Target(
                        "(\n"
                        f"  sum by (http_route) (rate({HTTP_COUNT}{sel(NOT_PROBES, FIVE_XX)}{RATE}))\n  or\n"
                        f"  0 * sum by (http_route) (rate({HTTP_COUNT}{sel(NOT_PROBES)}{RATE}))\n)\n/\n"
                        f"sum by (http_route) (rate({HTTP_COUNT}{sel(NOT_PROBES)}{RATE}))",
                        "{{http_route}}",
                    ),
                ),
                unit="percentunit",
                width=8,
            ),
            Panel(
                title="5xx answers by route and error type",
                description=(
                    "5xx answers per second; error_type is the status code or, when the handler raised, the "
                    "exception class (look for the request's error log line)."
                ),
                targets=(
                    Target(
                        or_zero(f"sum by (http_route, error_type) (rate(http_server_errors_total{sel()}{RATE}))"),
                        "{{http_route}} {{error_type}}",
                    ),
                ),
                unit="reqps",
                width=8,
            ),
            *(latency_quantile(q) for q in QUANTILES),
            Panel(
                title="Answers by status code",
                description="All answers per second by status code, probes included.",
                targets=(
                    Target(
                        f"sum by (http_response_status_code) (rate({HTTP_COUNT}{sel()}{RATE}))",
                        "{{http_response_status_code}}",
                    ),
                ),
                unit="reqps",
                width=8,
                stacked=True,
            ),
            Panel(
                title="Requests in flight",
                description="Requests being served right now, by method (probes included).",
                targets=(
                    Target(
                        f"sum by (http_request_method) (http_server_active_requests{sel()})", "{{http_request_method}}"
                    ),
                ),
                width=8,
            ),
            Panel(
                title="Readiness",
                description=(
                    "1 while the instance answered a GET /health/ready probe with anything but 200 in the last "
                    "2 minutes (recording rule over the probe answers). Repeated flips fire "
                    "UserServiceReadinessFlapping."
                ),
                targets=(
                    Target(f"max by (instance) (instance:user_service_readiness_failing:bool{sel()})", "{{instance}}"),
                ),
                width=8,
                maximum=1,
            ),
        ),
    )
    saturation = Row(
        "Saturation",
        (
            hashing_saturation(),
            hashing_queue(),
            hashing_rejections(),
            Panel(
                title="Database connection pool",
                description=(
                    "Connections checked out, idle, and the pool's maximum (size + overflow); waiting = requests "
                    "queued for a connection (sampled every 2 s). Sustained waiters fire "
                    "UserServiceDBPoolExhausted."
                ),
                targets=(
                    Target(
                        f"sum by (instance) (user_service_db_pool_connections_in_use{sel()})", "{{instance}} in use"
                    ),
                    Target(f"sum by (instance) (user_service_db_pool_connections_idle{sel()})", "{{instance}} idle"),
                    Target(f"sum by (instance) (user_service_db_pool_waiting{sel()})", "{{instance}} waiting"),
                    Target(f"sum by (instance) (user_service_db_pool_connections_max{sel()})", "{{instance}} max"),
                ),
            ),
        ),
    )
    build = Row(
        "Build",
        (
            Panel(
                title="Running builds",
                description="Instances per version and commit (user_service_build_info); two lines = a rollout.",
                targets=(
                    Target(f"count by (version, commit) (user_service_build_info{sel()})", "{{version}} {{commit}}"),
                ),
                width=24,
                height=6,
            ),
        ),
    )
    return Dashboard(
        uid="user-service-overview",
        title="User service / Overview",
        description="RED per route, SLOs and error budgets, hashing-pool and database-pool saturation.",
        filename="service-overview.json",
        rows=(slo, traffic, saturation, build),
    )


# --- auth ------------------------------------------------------------------------------------


def auth() -> Dashboard:
    login_selector = sel(LOGIN_ROUTE, NOT_5XX)
    logins = Row(
        "Logins",
        (
            Panel(
                title="Login attempts by result",
                description=(
                    "success, unknown_user, wrong_password, inactive_user, deleted_user (all failures get the same "
                    "401), shed (503, hashing pool full). A wave of unknown_user or wrong_password is credential "
                    "stuffing: check the login_failed log events. Lockouts are not measured yet (account_locked "
                    "arrives with brute-force throttling)."
                ),
                targets=(
                    Target(
                        or_zero(f"sum by (result) (rate(user_service_login_attempts_total{sel()}{RATE}))"), "{{result}}"
                    ),
                ),
                unit="reqps",
                stacked=True,
            ),
            Panel(
                title="Login failure ratio",
                description="Share of login attempts that did not succeed (any reason, sheds included).",
                targets=(
                    Target(
                        f"(\n  sum(rate(user_service_login_attempts_total{sel(FAILED_LOGIN)}{RATE}))\n"
                        "  or\n  vector(0)\n)\n/\n"
                        f"sum(rate(user_service_login_attempts_total{sel()}{RATE}))",
                        "failed",
                    ),
                ),
                unit="percentunit",
                maximum=1,
            ),
            Panel(
                title="Login latency",
                description=(
                    f"POST /api/v1/auth/login duration quantiles (5xx left out, as in the SLO). The dashed line "
                    f"is the SLO threshold, {LOGIN_THRESHOLD_SECONDS} s: 99 % of logins must be under it. Exemplar "
                    "dots link to the trace (its 'password verify' span shows queue wait and run time)."
                ),
                targets=tuple(
                    Target(
                        f"histogram_quantile({q}, sum by (le) (rate({HTTP_BUCKET}{login_selector}{RATE})))",
                        f"p{round(q * 100)}",
                        exemplar=True,
                    )
                    for q in QUANTILES
                ),
                unit="s",
                thresholds=(Threshold(None, "green"), Threshold(LOGIN_THRESHOLD_SECONDS, "red")),
            ),
            Panel(
                title=f"Logins faster than {LOGIN_THRESHOLD_SECONDS} s (SLI)",
                description="The login latency SLI over 5 minutes and 1 hour; the SLO is 99 %.",
                targets=(
                    Target(f"1 - job:user_service_login_slow:ratio_rate5m{sel(instance=False)}", "5m"),
                    Target(f"1 - job:user_service_login_slow:ratio_rate1h{sel(instance=False)}", "1h"),
                ),
                unit="percentunit",
                minimum=None,
                maximum=1,
                thresholds=(Threshold(None, "red"), Threshold(0.99, "green")),
            ),
        ),
    )

    def hash_quantiles(metric: str) -> tuple[Target, ...]:
        return tuple(
            Target(
                f"histogram_quantile({q}, sum by (operation, le) (rate({metric}{sel()}{RATE})))",
                f"p{round(q * 100)} {{{{operation}}}}",
            )
            for q in QUANTILES
        )

    hashing = Row(
        "Password hashing",
        (
            Panel(
                title="Hash and verify duration",
                description=(
                    "argon2 time on a worker thread, per operation (hash = registration and password change, "
                    "verify = login). About 57 ms at default parameters on the 2-core reference machine; a "
                    "rise without a parameter change means CPU throttling or noisy neighbours."
                ),
                targets=hash_quantiles("user_service_password_hash_duration_seconds_bucket"),
                unit="s",
                width=8,
            ),
            Panel(
                title="Queue wait",
                description="Time a hash waited for a free worker before running. Above zero = the pool is saturated.",
                targets=hash_quantiles("user_service_password_hash_queue_wait_seconds_bucket"),
                unit="s",
                width=8,
            ),
            Panel(
                title="Hashes per second",
                description="Hash and verify throughput; the pool's ceiling is workers / duration.",
                targets=(
                    Target(
                        f"sum by (operation) (rate(user_service_password_hash_duration_seconds_count{sel()}{RATE}))",
                        "{{operation}}",
                    ),
                ),
                unit="ops",
                width=8,
            ),
            hashing_saturation(),
            hashing_queue(),
            hashing_rejections(),
        ),
    )
    tokens = Row(
        "Tokens and sessions",
        (
            Panel(
                title="Refresh outcomes",
                description=(
                    "rotated (success), unknown, expired, revoked, reused (a spent token presented again; its "
                    "session family is revoked), user_inactive."
                ),
                targets=(
                    Target(
                        or_zero(f"sum by (result) (rate(user_service_token_refreshes_total{sel()}{RATE}))"),
                        "{{result}}",
                    ),
                ),
                unit="reqps",
                width=8,
                stacked=True,
            ),
            Panel(
                title="Refresh-token reuse detections (15 min)",
                description=(
                    "Spent refresh tokens presented again in the last 15 minutes. The dashed line is the alert's "
                    "threshold (UserServiceRefreshTokenReuseSpike: more than 10, and over 1 % of refreshes). "
                    "Details: refresh_reuse_detected log events."
                ),
                targets=(
                    Target(f"sum(increase(user_service_refresh_token_reuse_detections_total{sel()}[15m]))", "reuses"),
                ),
                width=8,
                thresholds=(Threshold(None, "green"), Threshold(10, "red")),
            ),
            Panel(
                title="Tokens issued",
                description="Access and refresh tokens issued per second (logins and refreshes).",
                targets=(
                    Target(or_zero(f"sum by (kind) (rate(user_service_tokens_issued_total{sel()}{RATE}))"), "{{kind}}"),
                ),
                unit="ops",
                width=8,
            ),
        ),
    )
    accounts = Row(
        "Accounts",
        (
            Panel(
                title="Registrations by result",
                description=(
                    "created, conflict (username or email taken), invalid (rejected by the service's checks, "
                    "e.g. a weak password), shed (503)."
                ),
                targets=(
                    Target(
                        or_zero(f"sum by (result) (rate(user_service_registrations_total{sel()}{RATE}))"), "{{result}}"
                    ),
                ),
                unit="reqps",
                stacked=True,
            ),
            Panel(
                title="Account changes (last hour)",
                description=(
                    "password_changed, role_changed, deactivated, reactivated, deleted in the last hour. Who did "
                    "what: the role_changed, user_deactivated, user_reactivated and user_deleted log events."
                ),
                targets=(
                    Target(
                        or_zero(f"sum by (change) (increase(user_service_account_changes_total{sel()}[1h]))"),
                        "{{change}}",
                    ),
                ),
            ),
        ),
    )
    return Dashboard(
        uid="user-service-auth",
        title="User service / Auth",
        description="Logins, password hashing, refresh tokens and account changes.",
        filename="auth.json",
        rows=(logins, hashing, tokens, accounts),
    )


def dashboards() -> tuple[Dashboard, ...]:
    return (service_overview(), auth())


def rendered() -> dict[Path, str]:
    """Each dashboard's file and the JSON text it should contain."""
    return {DASHBOARDS_DIR / d.filename: to_text(d) for d in dashboards()}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--check", action="store_true", help="exit 1 if a rendered file is stale, write nothing")
    args = parser.parse_args(argv)
    stale = [path for path, text in rendered().items() if not path.exists() or path.read_text() != text]
    if args.check:
        for path in stale:
            sys.stderr.write(f"stale: {path} (run: uv run python -m deploy.grafana.generate)\n")
        return 1 if stale else 0
    DASHBOARDS_DIR.mkdir(parents=True, exist_ok=True)
    for path, text in rendered().items():
        path.write_text(text)
        sys.stdout.write(f"wrote {path}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
