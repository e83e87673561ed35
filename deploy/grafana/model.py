"""The panel model of the dashboards (this project's conventions) and its rendering to
Grafana JSON through Grafana's own typed builders (grafana-foundation-sdk)."""

from __future__ import annotations

import json
import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from grafana_foundation_sdk.builders import common as sdk_common
from grafana_foundation_sdk.builders import dashboard as sdk_dashboard
from grafana_foundation_sdk.builders import prometheus as sdk_prometheus
from grafana_foundation_sdk.builders import stat as sdk_stat
from grafana_foundation_sdk.builders import timeseries as sdk_timeseries
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import common as sdk_common_models
from grafana_foundation_sdk.models import dashboard as sdk_dashboard_models
from grafana_foundation_sdk.models import prometheus as sdk_prometheus_models

from deploy.slo.spec import load as load_slo_spec

JSON = dict[str, Any]

DASHBOARDS_DIR = Path(__file__).resolve().parent / "dashboards"

# The scrape job every rule and panel selects (deploy/prometheus/prometheus.yml).
JOB = 'job="user-service"'
INSTANCE = 'instance=~"$instance"'
JOB_SERIES_BUILD = "user_service_build_info{" + JOB + "}"
# The SLOs come from their one source, deploy/slo/slos.yml.
SLOS = load_slo_spec()
# The threshold is in the SLI's query (le="0.25"); x-loadtest.threshold_ms states it in numbers.
LOGIN_THRESHOLD_SECONDS = (SLOS.by_name("login-latency").loadtest.threshold_ms or 0) / 1000
LOGIN_ROUTE = 'http_request_method="POST", http_route="/api/v1/auth/login"'

PROMETHEUS = {"type": "prometheus", "uid": "${datasource}"}
GRID_COLUMNS = 24
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
    # Ask Grafana to fetch exemplars (trace ids) for this query: the HTTP duration and the
    # two hashing histograms carry them.
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


# --- rendering, through Grafana's own typed builders (grafana-foundation-sdk) -----------------
#
# The dataclasses above say what a panel shows, in this project's terms; the SDK's builders
# turn that into Grafana's dashboard schema, lay the panels out on the 24-column grid and
# serialise them, so the JSON follows Grafana's own model rather than one written by hand.


def _datasource() -> sdk_dashboard_models.DataSourceRef:
    return sdk_dashboard_models.DataSourceRef(type_val=PROMETHEUS["type"], uid=PROMETHEUS["uid"])


def _query(target: Target, ref_id: str, *, instant: bool = False) -> sdk_prometheus.Dataquery:
    query = (
        sdk_prometheus.Dataquery()
        .datasource(_datasource())
        .editor_mode(sdk_prometheus_models.QueryEditorMode.CODE)
        .exemplar(target.exemplar)
        .expr(target.expr)
    )
    # A stat shows one number: an instant query computes it once, where a range query
    # would recompute it (a 30-day sum_over_time, for the budget stats) at every step.
    query = query.instant() if instant else query.range()
    return query.legend_format(target.legend).ref_id(ref_id)


def _thresholds(panel: Panel) -> sdk_dashboard.ThresholdsConfig:
    steps = [(t.color, t.value) for t in panel.thresholds] or [("green", None)]
    return (
        sdk_dashboard.ThresholdsConfig()
        .mode(sdk_dashboard_models.ThresholdsMode.ABSOLUTE)
        .steps([sdk_dashboard_models.Threshold(color=color, value=value) for color, value in steps])
    )


def _common(builder: Any, panel: Panel, panel_targets: Sequence[Target]) -> Any:
    builder = (
        builder.title(panel.title)
        .description(panel.description)
        .datasource(_datasource())
        .unit(panel.unit)
        .thresholds(_thresholds(panel))
        .span(panel.width)
        .height(panel.height)
    )
    for index, target in enumerate(panel_targets):
        builder = builder.with_target(_query(target, chr(ord("A") + index), instant=panel.kind == "stat"))
    if panel.minimum is not None:
        builder = builder.min(panel.minimum)
    if panel.maximum is not None:
        builder = builder.max(panel.maximum)
    if panel.decimals is not None:
        builder = builder.decimals(panel.decimals)
    return builder


def _timeseries(panel: Panel) -> sdk_timeseries.Panel:
    stacking = sdk_common_models.StackingMode.NORMAL if panel.stacked else sdk_common_models.StackingMode.NONE
    threshold_style = (
        sdk_common_models.GraphTresholdsStyleMode.DASHED
        if panel.thresholds
        else sdk_common_models.GraphTresholdsStyleMode.OFF
    )
    builder: sdk_timeseries.Panel = _common(sdk_timeseries.Panel(), panel, panel.targets)
    return (
        builder.color_scheme(sdk_dashboard.FieldColor().mode(sdk_dashboard_models.FieldColorModeId.PALETTE_CLASSIC))
        .draw_style(sdk_common_models.GraphDrawStyle.LINE)
        .line_width(1)
        .fill_opacity(20 if panel.stacked else 0)
        .show_points(sdk_common_models.VisibilityMode.NEVER)
        .span_nulls(False)
        .stacking(sdk_common.StackingConfig().mode(stacking).group("A"))
        .thresholds_style(sdk_common.GraphThresholdsStyleConfig().mode(threshold_style))
        .legend(
            sdk_common.VizLegendOptions()
            .display_mode(sdk_common_models.LegendDisplayMode.TABLE)
            .placement(sdk_common_models.LegendPlacement.BOTTOM)
            .show_legend(True)
            .calcs(["mean", "max"])
        )
        .tooltip(
            sdk_common.VizTooltipOptions()
            .mode(sdk_common_models.TooltipDisplayMode.MULTI)
            .sort(sdk_common_models.SortOrder.DESCENDING)
        )
    )


def _stat(panel: Panel) -> sdk_stat.Panel:
    builder: sdk_stat.Panel = _common(sdk_stat.Panel(), panel, panel.targets)
    return (
        builder.color_scheme(sdk_dashboard.FieldColor().mode(sdk_dashboard_models.FieldColorModeId.THRESHOLDS))
        .color_mode(sdk_common_models.BigValueColorMode.BACKGROUND)
        .graph_mode(sdk_common_models.BigValueGraphMode.NONE)
        .justify_mode(sdk_common_models.BigValueJustifyMode.AUTO)
        .orientation(sdk_common_models.VizOrientation.AUTO)
        .text_mode(sdk_common_models.BigValueTextMode.AUTO)
        .reduce_options(sdk_common.ReduceDataOptions().calcs(["lastNotNull"]).values(False).fields(""))
    )


def _variables() -> list[Any]:
    instances = f"label_values(user_service_build_info{sel(instance=False)}, instance)"
    return [
        sdk_dashboard.DatasourceVariable("datasource").label("Prometheus").type("prometheus"),
        sdk_dashboard.DatasourceVariable("tempo").label("Traces").type("tempo"),
        sdk_dashboard.QueryVariable("instance")
        .label("Instance")
        .datasource(_datasource())
        .query({"query": instances, "refId": "PrometheusVariableQueryEditor-VariableQuery"})
        .include_all(True)
        .all_value(".*")
        .multi(True)
        .refresh(sdk_dashboard_models.VariableRefresh.ON_TIME_RANGE_CHANGED)
        .sort(sdk_dashboard_models.VariableSort.ALPHABETICAL_ASC),
    ]


def _links() -> list[Any]:
    explore = json.dumps({"datasource": "${tempo}", "queries": [{"refId": "A"}]}, separators=(",", ":"))
    return [
        sdk_dashboard.DashboardLink("User service")
        .type(sdk_dashboard_models.DashboardLinkType.DASHBOARDS)
        .tags(["user-service"])
        .icon("external link")
        .as_dropdown(False)
        .include_vars(False)
        .keep_time(True)
        .target_blank(False),
        sdk_dashboard.DashboardLink("Traces")
        .type(sdk_dashboard_models.DashboardLinkType.LINK)
        .icon("external link")
        .tooltip("Explore the service's traces in the ${tempo} datasource")
        .url("/explore?left=" + urllib.parse.quote(explore, safe="${}"))
        .keep_time(True)
        .target_blank(True),
    ]


# Marks on every time series: when an alert of this service fired, and when a build started
# serving on an instance (its build_info series appears: a deploy, a restart, a scale-up).
# "Did it start with the deploy?" and "what was firing then?" without leaving the panel.
ANNOTATIONS = (
    (
        "Alerts firing",
        'ALERTS{alertstate="firing", alertname=~"UserService.+", alertname!="UserServiceWatchdog"}',
        "red",
    ),
    ("Deploys and restarts", f"count by (version) ({JOB_SERIES_BUILD} unless {JOB_SERIES_BUILD} offset 5m)", "blue"),
)


def _annotations() -> list[Any]:
    return [
        sdk_dashboard.AnnotationQuery().name(name).datasource(_datasource()).expr(expr).enable(True).icon_color(color)
        for name, expr, color in ANNOTATIONS
    ]


def _check_tiling(row: Row) -> None:
    """The SDK fills a line left to right and starts a new one only once a line is full, so
    the widths of a row's panels must add up to whole lines of 24 columns as they go."""
    x = 0
    for panel in row.panels:
        if x + panel.width > GRID_COLUMNS:
            raise ValueError(f"row {row.title!r}: {panel.title!r} (width {panel.width}) does not fit at column {x}")
        x = (x + panel.width) % GRID_COLUMNS


def build(dashboard: Dashboard) -> Any:
    """The dashboard as the SDK's model."""
    builder = (
        sdk_dashboard.Dashboard(dashboard.title)
        .uid(dashboard.uid)
        .description(dashboard.description)
        .tags(["user-service"])
        .editable()
        .tooltip(sdk_dashboard_models.DashboardCursorSync.CROSSHAIR)
        .refresh("30s")
        .time("now-6h", "now")
        .timezone("utc")
        .version(1)
        .variables(_variables())
    )
    for link in _links():
        builder = builder.link(link)
    for annotation in _annotations():
        builder = builder.annotation(annotation)
    # Expanded rows: in Grafana's model an open row is followed by its panels at the top
    # level (only a collapsed row holds them), so the SREs see every panel on opening.
    for row in dashboard.rows:
        _check_tiling(row)
        builder = builder.with_row(sdk_dashboard.Row(row.title).collapsed(False))
        for panel in row.panels:
            builder = builder.with_panel(_stat(panel) if panel.kind == "stat" else _timeseries(panel))
    return builder.build()


def render(dashboard: Dashboard) -> JSON:
    """Grafana's JSON for the dashboard, with panel ids in order (the SDK leaves them out)."""
    document: JSON = json.loads(json.dumps(build(dashboard), cls=JSONEncoder))
    for number, panel in enumerate(_flat(document["panels"]), start=1):
        panel["id"] = number
    return document


def _flat(panels: list[JSON]) -> list[JSON]:
    return [item for panel in panels for item in (panel, *_flat(panel.get("panels", [])))]


def to_text(dashboard: Dashboard) -> str:
    return json.dumps(render(dashboard), indent=2, ensure_ascii=False) + "\n"
