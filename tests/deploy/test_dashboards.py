"""The Grafana dashboards: the committed JSON is what deploy/grafana/generate.py renders,
it is valid, and every query reads only metrics the service exports (or recording rules)."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from deploy.grafana import generate
from deploy.grafana.dependencies import EXPORTER_SERIES
from loadtests.locust_series import SERIES as LOCUST_SERIES
from tests.deploy.artifacts import (
    CONTAINER_SERIES,
    DASHBOARDS_DIR,
    DEPENDENCIES_DASHBOARD,
    LOAD_TEST_DASHBOARD,
    PROBE_JOB,
    PROBE_SERIES,
    all_panels,
    catalogue_series,
    dashboard_queries,
    load_dashboard,
    metric_names,
    recording_rule_names,
)

DASHBOARD_FILES = sorted(DASHBOARDS_DIR.glob("*.json"))
OVERVIEW_DASHBOARD = "service-overview.json"
# What the overview reads beside the service's own series, and the job each such query must
# select: the outside-in probes and the container as the kubelet's cAdvisor reports it.
OVERVIEW_FOREIGN = {f'job="{PROBE_JOB}"': PROBE_SERIES, 'job="kubelet"': CONTAINER_SERIES}


def test_every_dashboard_is_committed() -> None:
    expected = {"service-overview.json", "auth.json", LOAD_TEST_DASHBOARD, DEPENDENCIES_DASHBOARD}
    assert {path.name for path in DASHBOARD_FILES} == expected


def test_committed_json_is_what_the_generator_renders() -> None:
    rendered = generate.rendered()
    assert set(rendered) == set(DASHBOARD_FILES)
    stale = [path.name for path, text in rendered.items() if path.read_text() != text]
    assert not stale, f"{stale} differ from deploy/grafana/generate.py: run `uv run python -m deploy.grafana.generate`"
    assert generate.main(["--check"]) == 0


@pytest.mark.parametrize("path", DASHBOARD_FILES, ids=[p.name for p in DASHBOARD_FILES])
def test_dashboard_is_valid_grafana_json(path: Path) -> None:
    dashboard = json.loads(path.read_text())  # raises on invalid JSON
    assert dashboard["uid"]
    assert dashboard["title"]
    assert dashboard["schemaVersion"] >= 36
    panels = all_panels(dashboard)
    ids = Counter(panel["id"] for panel in panels)
    assert not [i for i, n in ids.items() if n > 1], f"duplicate panel ids: {ids}"
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert (variables["datasource"]["type"], variables["datasource"]["query"]) == ("datasource", "prometheus")
    assert (variables["tempo"]["type"], variables["tempo"]["query"]) == ("datasource", "tempo")
    for panel in panels:
        if panel["type"] == "row":
            continue
        title = panel["title"]
        assert panel["targets"], f"{title}: no queries"
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, title
        assert panel.get("description"), f"{title}: no description"
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, f"{title}: wider than the grid"
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "${datasource}", title
            assert target["expr"].strip(), title
            if "http_server_request_duration_seconds_bucket" in target["expr"]:
                # Latency panels of the HTTP histogram link their exemplars to traces.
                assert target["exemplar"] is True, f"{title}: exemplars off"
            # A stat shows one number: computed once (instant), not once per step of the
            # range (the budget stats' 30-day sums would be recomputed hundreds of times).
            if panel["type"] == "stat":
                assert target.get("instant") is True, f"{title}: a range query behind a stat"
                assert not target.get("range"), f"{title}: a range query behind a stat"


def test_panels_do_not_overlap() -> None:
    for path in DASHBOARD_FILES:
        cells: dict[tuple[int, int], str] = {}
        for panel in all_panels(load_dashboard(path)):
            grid = panel["gridPos"]
            for x in range(grid["x"], grid["x"] + grid["w"]):
                for y in range(grid["y"], grid["y"] + grid["h"]):
                    assert (x, y) not in cells, f"{path.name}: {panel['title']} overlaps {cells[(x, y)]}"
                    cells[(x, y)] = panel["title"]


def test_queries_read_only_catalogued_metrics_and_recording_rules() -> None:
    """...and, on the load-test dashboard only, Locust's own series; on the dependencies
    dashboard only, the exporters' series it lists; on the overview, the probes' and the
    container's."""
    allowed = catalogue_series() | recording_rule_names()
    also = {
        LOAD_TEST_DASHBOARD: LOCUST_SERIES,
        DEPENDENCIES_DASHBOARD: EXPORTER_SERIES,
        OVERVIEW_DASHBOARD: PROBE_SERIES | CONTAINER_SERIES,
    }
    unknown = sorted(
        f"{query.dashboard} / {query.panel}: {name}"
        for query in dashboard_queries()
        for name in metric_names(query.expr)
        if name not in allowed and name not in also.get(query.dashboard, frozenset())
    )
    assert not unknown, "metrics neither in docs/observability.md nor recording rules:\n" + "\n".join(unknown)


def test_every_query_selects_the_user_service_job() -> None:
    """The service's own series, that is; Locust's have no job of ours, and the exporters'
    select their own jobs."""
    offenders = [
        f"{query.dashboard} / {query.panel}"
        for query in dashboard_queries()
        if 'job="user-service"' not in query.expr
        and metric_names(query.expr) - LOCUST_SERIES - EXPORTER_SERIES - PROBE_SERIES - CONTAINER_SERIES
    ]
    foreign = [q for q in dashboard_queries() if metric_names(q.expr) & (PROBE_SERIES | CONTAINER_SERIES)]
    assert len(foreign) == 4
    for query in foreign:
        needed = [job for job, series in OVERVIEW_FOREIGN.items() if metric_names(query.expr) & series]
        assert all(job in query.expr for job in needed), f"{query.panel}: {query.expr}"
    exporters = [q for q in dashboard_queries() if metric_names(q.expr) & EXPORTER_SERIES]
    assert exporters
    for query in exporters:
        jobs = ('job="postgres"', 'job="user-service-db"', 'job="redis"')
        assert any(job in query.expr for job in jobs), f"{query.panel}: {query.expr}"
    assert not offenders, offenders
