"""Grafana dashboards as code for the user service.

Renders deploy/grafana/dashboards/service-overview.json, auth.json, load-test.json and
dependencies.json from the panel definitions in service_overview.py, auth.py, load_test.py
and dependencies.py (this project's panel conventions in model.py, rendered through
Grafana's own typed builders, grafana-foundation-sdk; shared panels in panels.py). The
rendered JSON is committed next to this script, and a test fails when they drift apart.
The Kubernetes copies (ConfigMaps for the Grafana sidecar) come from the same rendering,
so regenerate everything after any change with the single generator:

    uv run python -m deploy.generate          # rewrite the JSON files and their copies
    uv run python -m deploy.generate --check  # exit 1 if one is stale

(``python -m deploy.grafana.generate`` does the same for the dashboards and their copy only.)

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

import sys
from collections.abc import Sequence
from pathlib import Path

from deploy.grafana.auth import auth
from deploy.grafana.dependencies import dependencies
from deploy.grafana.load_test import load_test
from deploy.grafana.model import DASHBOARDS_DIR, Dashboard, to_text
from deploy.grafana.service_overview import service_overview


def dashboards() -> tuple[Dashboard, ...]:
    return (service_overview(), auth(), load_test(), dependencies())


def rendered() -> dict[Path, str]:
    """Each dashboard's file and the JSON text it should contain."""
    return {DASHBOARDS_DIR / d.filename: to_text(d) for d in dashboards()}


def main(argv: Sequence[str] | None = None) -> int:
    """The dashboards and their Kubernetes copy, through the single generator
    (deploy/generate.py, which renders every generated file)."""
    # Imported here: both modules import this one for rendered().
    from deploy import generate, k8s_artifacts  # noqa: PLC0415

    return generate.main(argv, files=lambda: {**rendered(), **k8s_artifacts.dashboard_copies()})


if __name__ == "__main__":
    sys.exit(main())
