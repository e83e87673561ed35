"""When each load test ran, for reading it against the service's own telemetry.

Every run writes ``run-window.json`` into its report folder (profile, target, start and end
in UTC, Locust's exit code) and appends the same line to ``runs.jsonl`` in the folder above
it (``loadtests/reports/runs.jsonl`` for the default report folders),
so that a dashboard's time range can be set to a run, or a run found from a spike. With
``GRAFANA_URL`` set (and ``GRAFANA_TOKEN``, a service-account token with the annotation
writer role), the window also becomes a Grafana region annotation tagged ``loadtest`` and
the profile's name, which every dashboard on the same Grafana shows. A Grafana that cannot
be reached costs a warning, never the run.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import sys
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path

WINDOW_FILE = "run-window.json"
RUNS_LOG = "runs.jsonl"


@dataclass(frozen=True, slots=True)
class RunWindow:
    profile: str
    target: str
    start: str  # ISO 8601, UTC
    end: str
    locust_exit_code: int

    @property
    def start_ms(self) -> int:
        return int(dt.datetime.fromisoformat(self.start).timestamp() * 1000)

    @property
    def end_ms(self) -> int:
        return int(dt.datetime.fromisoformat(self.end).timestamp() * 1000)


def now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds")


def record(window: RunWindow, report_dir: Path) -> None:
    line = json.dumps(asdict(window))
    (report_dir / WINDOW_FILE).write_text(line + "\n")
    with (report_dir.parent / RUNS_LOG).open("a") as runs:
        runs.write(line + "\n")


def annotation(window: RunWindow) -> dict[str, object]:
    return {
        "time": window.start_ms,
        "timeEnd": window.end_ms,
        "tags": ["loadtest", window.profile],
        "text": f"Load test {window.profile} against {window.target} (Locust exit {window.locust_exit_code})",
    }


def annotate(window: RunWindow, grafana_url: str | None = None, token: str | None = None) -> bool:
    """POST the window to Grafana's annotations API; True when Grafana took it."""
    grafana_url = grafana_url or os.environ.get("GRAFANA_URL")
    token = token or os.environ.get("GRAFANA_TOKEN")
    if not grafana_url:
        return False
    url = grafana_url.rstrip("/") + "/api/annotations"
    if not url.startswith(("http://", "https://")):
        sys.stderr.write(f"GRAFANA_URL must be http(s): {grafana_url}\n")
        return False
    if token and url.startswith("http://"):
        sys.stderr.write(f"warning: sending GRAFANA_TOKEN over plain http to {url}\n")
    headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {token}"} if token else {})}
    request = urllib.request.Request(url, data=json.dumps(annotation(window)).encode(), headers=headers, method="POST")  # noqa: S310 - http(s) checked above
    try:
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310  # nosec B310
            status: int = response.status
            return 200 <= status < 300
    except (urllib.error.URLError, OSError, ValueError) as exc:  # ValueError: http.client.InvalidURL
        sys.stderr.write(f"could not annotate the run in Grafana ({url}): {exc}\n")
        return False
