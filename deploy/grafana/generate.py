"""Grafana dashboards as code for the user service.

Renders deploy/grafana/dashboards/service-overview.json and auth.json from the panel
definitions in service_overview.py and auth.py (model and rendering in model.py, shared
panels in panels.py); the rendered JSON is committed next to this script, and a test fails
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
import sys
from collections.abc import Sequence
from pathlib import Path

from deploy.grafana.auth import auth
from deploy.grafana.model import DASHBOARDS_DIR, Dashboard, to_text
from deploy.grafana.service_overview import service_overview


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
