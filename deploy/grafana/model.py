"""The panel model of the dashboards and its rendering to Grafana JSON (schema v39)."""

from __future__ import annotations

import json
import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from deploy.slo.spec import load as load_slo_spec

JSON = dict[str, Any]

DASHBOARDS_DIR = Path(__file__).resolve().parent / "dashboards"

# The scrape job every rule and panel selects (deploy/prometheus/prometheus.yml).
JOB = 'job="user-service"'
INSTANCE = 'instance=~"$instance"'
# The SLOs come from their one source, deploy/slo/slos.yml.
SLOS = load_slo_spec()
# The threshold is in the SLI's query (le="0.25"); x-loadtest.threshold_ms states it in numbers.
LOGIN_THRESHOLD_SECONDS = (SLOS.by_name("login-latency").loadtest.threshold_ms or 0) / 1000
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
