"""Real Prometheus and Alertmanager on loopback, for tests that break the service and wait
for the page.

- Alertmanager (Debian's ``prometheus-alertmanager``) runs the shipped
  deploy/alertmanager/alertmanager.yml. Only what leaves the machine is changed: the
  secret files it names are written under the test's folder, the Slack URL in them and the
  PagerDuty endpoint point at a local ``Sink`` that records every notification. Routes,
  grouping, timings and inhibitions are the shipped ones.
- Prometheus (Debian's ``prometheus``) scrapes the service every second and evaluates
  every rule of the service, time-scaled by ``TIME_SCALE`` (deploy/slo/scaled.py: windows
  and ``for:`` divided, names and labels unchanged), every second.
- A blackbox exporter (Debian's ``prometheus-blackbox-exporter``, with
  deploy/blackbox/blackbox.yml) probes the service from outside every second, as job
  user-service-probe. It asks ``/health/ready``: here there is no ingress to take an
  unready process out of rotation, and that answer is what the ingress's would follow.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from deploy.slo import scaled
from testkit.ports import free_port
from tests.deploy.artifacts import ROOT, dashboard_queries, require_tool, substitute_variables

ALERTMANAGER_CONFIG = ROOT / "deploy" / "alertmanager" / "alertmanager.yml"
BLACKBOX_CONFIG = ROOT / "deploy" / "blackbox" / "blackbox.yml"
PROBE_JOB = "user-service-probe"
PROBED_PATH = "/health/ready"
LOOPBACK = "127.0.0.1"
# An hour of production is a minute here: 5m -> 5 s, 1h -> 1 min, "for: 2m" -> 2 s.
TIME_SCALE = 60


# Always firing (the dead man's switch): left out of what the tests ask Alertmanager for,
# unless they ask for it by name.
WATCHDOG = "UserServiceWatchdog"
DEADMAN_PATH = "/deadman"


@dataclass
class Notification:
    path: str
    body: dict[str, Any]
    at: float  # time.monotonic()
    authorization: str = ""


@dataclass
class Sink:
    """An HTTP server on loopback that records every POST (the pager's and chat's side)."""

    port: int = field(default_factory=free_port)
    received: list[Notification] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    @contextlib.contextmanager
    def running(self) -> Iterator[Sink]:
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length) or b"{}")
                authorization = self.headers.get("Authorization") or ""
                sink.received.append(Notification(self.path, body, time.monotonic(), authorization))
                self.send_response(202)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        server = ThreadingHTTPServer((LOOPBACK, self.port), Handler)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            yield self
        finally:
            server.shutdown()
            server.server_close()


def alertmanager_config_for_test(folder: Path, sink: Sink) -> Path:
    """The shipped config with its secret files under ``folder`` and its outside endpoints
    at the sink; everything else untouched."""
    folder.mkdir(parents=True, exist_ok=True)
    config = yaml.safe_load(ALERTMANAGER_CONFIG.read_text())
    for receiver in config["receivers"]:
        for pagerduty in receiver.get("pagerduty_configs", []):
            key = folder / "pagerduty-routing-key"
            key.write_text("test-routing-key")
            pagerduty["routing_key_file"] = str(key)
            pagerduty["url"] = f"{sink.url}/pagerduty"
        for slack in receiver.get("slack_configs", []):
            url = folder / "slack-webhook-url"
            url.write_text(f"{sink.url}/slack")
            slack["api_url_file"] = str(url)
        for webhook in receiver.get("webhook_configs", []):
            key = folder / "deadman-api-key"
            key.write_text("test-deadman-key")
            webhook["url"] = f"{sink.url}{DEADMAN_PATH}"
            webhook["http_config"]["authorization"]["credentials_file"] = str(key)
    path = folder / "alertmanager.yml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


async def _stop(process: asyncio.subprocess.Process) -> None:
    if process.returncode is None:
        process.terminate()
        try:
            await asyncio.wait_for(process.wait(), timeout=15)
        except TimeoutError:
            process.kill()
            await process.wait()


async def _until_up(url: str, what: str, log: Path, within: float = 60) -> None:
    deadline = time.monotonic() + within
    async with httpx.AsyncClient(timeout=2) as client:
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.HTTPError):
                if (await client.get(url)).status_code == 200:
                    return
            await asyncio.sleep(0.2)
    pytest.fail(f"{what} did not become ready:\n{_tail(log)}")


@contextlib.contextmanager
def _log_file(path: Path) -> Iterator[Any]:
    """``path`` opened for a child process's output, its folder made first."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as log:
        yield log


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def _tail(log: Path) -> str:
    return log.read_text(errors="replace")[-3000:]


@dataclass
class AlertStack:
    prometheus_url: str
    alertmanager_url: str
    sink: Sink
    started: float = field(default_factory=time.monotonic)

    async def alerts(self, alertname: str | None = None) -> list[dict[str, Any]]:
        """Alertmanager's view: every alert it holds (active, suppressed or unprocessed),
        the always-firing Watchdog only when asked for by name."""
        params = {"filter": f'alertname="{alertname}"'} if alertname else {"filter": f'alertname!="{WATCHDOG}"'}
        async with httpx.AsyncClient(base_url=self.alertmanager_url, timeout=5) as client:
            response = await client.get("/api/v2/alerts", params=params)
        response.raise_for_status()
        alerts: list[dict[str, Any]] = response.json()
        return alerts

    def notifications(self) -> list[Notification]:
        """What reached the pager and the chat channel (not the dead man's switch's heartbeats)."""
        return [n for n in self.sink.received if n.path != DEADMAN_PATH]

    async def matching(self, alertname: str, labels: Mapping[str, str]) -> list[dict[str, Any]]:
        return [a for a in await self.alerts(alertname) if labels.items() <= a["labels"].items()]

    async def wait_for(self, alertname: str, within: float, **labels: str) -> float:
        """Seconds until Alertmanager holds the alert; fails the test after ``within``."""
        started = time.monotonic()
        while not await self.matching(alertname, labels):
            if time.monotonic() - started > within:
                pytest.fail(f"{alertname} {labels} never reached Alertmanager; it holds: {await self.summary()}")
            await asyncio.sleep(0.25)
        return time.monotonic() - started

    async def wait_until_gone(self, alertname: str, within: float, **labels: str) -> float:
        """Seconds until Alertmanager no longer holds the alert (Prometheus sent its resolve)."""
        started = time.monotonic()
        while await self.matching(alertname, labels):
            if time.monotonic() - started > within:
                pytest.fail(f"{alertname} {labels} did not resolve; Alertmanager holds: {await self.summary()}")
            await asyncio.sleep(0.25)
        return time.monotonic() - started

    async def summary(self) -> list[str]:
        return sorted(
            f"{a['labels'].get('alertname')} {a['labels'].get('burn_rate', '')} {a['status']['state']}".strip()
            for a in await self.alerts()
        )

    async def pending_or_firing(self) -> list[str]:
        """Prometheus's own view, pending alerts included: what would reach Alertmanager
        (the Watchdog left out)."""
        async with httpx.AsyncClient(base_url=self.prometheus_url, timeout=5) as client:
            response = await client.get("/api/v1/alerts")
        return sorted(
            f"{a['labels']['alertname']} {a['labels'].get('burn_rate', '')} {a['state']}".strip()
            for a in response.json()["data"]["alerts"]
            if a["labels"]["alertname"] != WATCHDOG
        )


async def until_every_panel_has_data(prometheus: str, dashboard: str, within: float) -> list[str]:
    """Queries every expression of ``dashboard`` (a file name of deploy/grafana/dashboards/)
    until each returns data; the ones still empty at the end."""
    queries = [q for q in dashboard_queries() if q.dashboard == dashboard]
    assert queries, f"no queries in {dashboard}"
    deadline = time.monotonic() + within
    empty = [f"{q.panel}: {q.expr}" for q in queries]
    async with httpx.AsyncClient(base_url=prometheus, timeout=10) as api:
        while empty and time.monotonic() < deadline:
            await asyncio.sleep(2)
            empty = []
            for q in queries:
                body = (await api.post("/api/v1/query", data={"query": substitute_variables(q.expr)})).json()
                if body.get("status") != "success" or not body["data"]["result"]:
                    empty.append(f"{q.panel}: {q.expr} -> {body.get('error', 'empty')}")
    return empty


@contextlib.asynccontextmanager
async def running_prometheus(
    folder: Path,
    jobs: Mapping[str, str],
    rule_files: Sequence[Path] = (),
    alertmanager: str | None = None,
    probes: Mapping[str, str] | None = None,
) -> AsyncIterator[str]:
    """Prometheus on a free loopback port scraping each job's target every second and
    evaluating ``rule_files`` every second; yields its URL. ``probes``: the blackbox
    exporter's address and the URL it probes, scraped as job user-service-probe."""
    binary = require_tool("prometheus")
    port = free_port()
    config: dict[str, Any] = {
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(path) for path in rule_files],
        "scrape_configs": [{"job_name": job, "static_configs": [{"targets": [t]}]} for job, t in jobs.items()],
    }
    if probes:
        config["scrape_configs"].append(probe_scrape_config(probes["exporter"], probes["url"]))
    if alertmanager:
        config["alerting"] = {"alertmanagers": [{"static_configs": [{"targets": [alertmanager]}]}]}
    config_file = folder / "prometheus.yml"
    _write(config_file, json.dumps(config))  # JSON is YAML
    flags = (
        f"--config.file={config_file}",
        f"--storage.tsdb.path={folder / 'tsdb'}",
        # Prometheus resends a firing alert every minute (its default), time-scaled like the
        # rules: an alert that fired before Alertmanager was discovered (the always-firing
        # Watchdog, at start) is dropped once and sent again a second later, not a minute.
        "--rules.alert.resend-delay=1s",
    )
    async with _serving("Prometheus", [binary, *flags], port, folder / "prometheus.log") as url:
        yield url


def probe_scrape_config(exporter: str, url: str) -> dict[str, Any]:
    """The usual blackbox scrape: the exporter's /probe with the URL as its target, the URL
    as the series' instance (what k8s/base/monitoring/probe.yaml makes the operator write)."""
    return {
        "job_name": PROBE_JOB,
        "metrics_path": "/probe",
        "params": {"module": ["http_2xx"]},
        "static_configs": [{"targets": [url]}],
        "relabel_configs": [
            {"source_labels": ["__address__"], "target_label": "__param_target"},
            {"source_labels": ["__param_target"], "target_label": "instance"},
            {"target_label": "__address__", "replacement": exporter},
        ],
    }


@contextlib.asynccontextmanager
async def running_blackbox_exporter(folder: Path) -> AsyncIterator[str]:
    """Debian's blackbox exporter with the shipped module, until the block ends: its address."""
    command = [require_tool("prometheus-blackbox-exporter"), f"--config.file={BLACKBOX_CONFIG}"]
    port = free_port()
    async with _serving("blackbox exporter", command, port, folder / "blackbox.log"):
        yield f"{LOOPBACK}:{port}"


@contextlib.asynccontextmanager
async def running_alertmanager(config: Path, folder: Path) -> AsyncIterator[str]:
    """Alertmanager with ``config`` on a free loopback port until the block ends: its URL."""
    command = [
        require_tool("prometheus-alertmanager"),
        f"--config.file={config}",
        f"--storage.path={folder / 'alertmanager-data'}",
        "--cluster.listen-address=",  # one instance, no gossip port
    ]
    async with _serving("Alertmanager", command, free_port(), folder / "alertmanager.log") as url:
        yield url


@contextlib.asynccontextmanager
async def _serving(what: str, command: list[str], port: int, log_file: Path) -> AsyncIterator[str]:
    """``command`` listening on ``port`` of the loopback (Prometheus's and Alertmanager's
    flags), its output in ``log_file``, until the block ends: its URL once /-/ready says so."""
    with _log_file(log_file) as log:
        process = await asyncio.create_subprocess_exec(
            *command, f"--web.listen-address={LOOPBACK}:{port}", "--log.level=warn", stdout=log, stderr=log
        )
    try:
        url = f"http://{LOOPBACK}:{port}"
        await _until_up(f"{url}/-/ready", what, log_file)
        yield url
    finally:
        await _stop(process)


@contextlib.asynccontextmanager
async def alert_stack(folder: Path, target: str | None, *, with_rules: bool = True) -> AsyncIterator[AlertStack]:
    """Alertmanager, a blackbox exporter and Prometheus (scraping ``target``, if any, as job
    user-service and probing it from outside, and evaluating the time-scaled rules unless
    ``with_rules`` is false) on free ports."""
    with Sink().running() as sink:
        am_config = alertmanager_config_for_test(folder, sink)  # creates the folder
        rules = scaled.write(folder / "rules", TIME_SCALE) if with_rules else []
        jobs = {"user-service": target} if target else {}
        async with running_alertmanager(am_config, folder) as am_url, running_blackbox_exporter(folder) as blackbox:
            address = am_url.removeprefix("http://")
            probes = {"exporter": blackbox, "url": f"http://{target}{PROBED_PATH}"} if target else None
            async with running_prometheus(folder, jobs, rules, alertmanager=address, probes=probes) as prom_url:
                yield AlertStack(prom_url, am_url, sink)
