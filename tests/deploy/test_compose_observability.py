"""The observability configs docker-compose.yml mounts: Prometheus's (checked by promtool),
the OpenTelemetry Collector's and Tempo's (no binary of either installs here, so they are
parsed and their pipelines, ports and paths cross-checked with the compose file), and
Grafana's provisioning. Each check is also shown failing on a deliberately broken copy."""

from __future__ import annotations

import re
import shutil
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from testkit.smtp_server import smtp_server
from tests.deploy.alert_stack import ALERTMANAGER_CONFIG, BLACKBOX_CONFIG, running_alertmanager
from tests.deploy.artifacts import DASHBOARDS_DIR, PROMETHEUS_CONFIG, ROOT
from tests.deploy.compose_stack import (
    ALERTMANAGER_COMPOSE_CONFIG,
    BLACKBOX_COMPOSE_CONFIG,
    COLLECTOR_CONFIG,
    GRAFANA_COMPOSE_DATASOURCES,
    GRAFANA_LOCAL_DATASOURCES,
    PROMETHEUS_COMPOSE_CONFIG,
    TEMPO_CONFIG,
    bind_mounts,
    environment,
    load_yaml,
    mount_source,
    require,
    resolved_compose,
    service,
)


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return resolved_compose()


# --- Prometheus ----------------------------------------------------------------------------------


def promtool_check_config(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [require("promtool"), "check", "config", str(path)], capture_output=True, text=True, timeout=60, check=False
    )


def test_promtool_accepts_the_compose_prometheus_config() -> None:
    result = promtool_check_config(PROMETHEUS_COMPOSE_CONFIG)
    assert result.returncode == 0, result.stdout + result.stderr
    # The rule_files glob finds the rules (a glob without a match is no error to promtool).
    assert "rules/user-service.rules.yml" in result.stdout + result.stderr
    assert "rules/user-service-slo.rules.yml" in result.stdout + result.stderr


def test_promtool_rejects_a_broken_copy(tmp_path: Path) -> None:
    shutil.copytree(PROMETHEUS_COMPOSE_CONFIG.parent / "rules", tmp_path / "rules")
    broken = tmp_path / "prometheus.yml"
    broken.write_text(PROMETHEUS_COMPOSE_CONFIG.read_text().replace("scrape_interval: 15s", "scrape_interval: soon"))
    assert promtool_check_config(broken).returncode != 0


def test_compose_prometheus_is_the_local_one_with_the_compose_targets(compose: dict[str, Any]) -> None:
    local, composed = load_yaml(PROMETHEUS_CONFIG), load_yaml(PROMETHEUS_COMPOSE_CONFIG)
    jobs = {job["job_name"]: job for job in composed["scrape_configs"]}
    app = environment(service(compose, "app"))
    # The metrics port, never the service port that nginx forwards to.
    port = app["USER_SERVICE_METRICS__PORT"]
    assert port != app["USER_SERVICE_SERVER__PORT"]
    locust = environment(service(compose, "locust-master"))
    assert {name: job["static_configs"] for name, job in jobs.items()} == {
        "user-service": [{"targets": [f"app:{port}"]}],
        "postgres": [{"targets": ["postgres-exporter:9187"]}],
        "locust": [{"targets": [f"locust-master:{locust['LOADTEST_METRICS_PORT']}"]}],
        # The public path through nginx, by a name on nginx's certificate.
        "user-service-probe": [{"targets": ["https://nginx/.well-known/jwks.json"]}],
    }
    assert jobs["user-service-probe"]["relabel_configs"][-1]["replacement"] == "blackbox-exporter:9115"
    assert composed["alerting"]["alertmanagers"] == [{"static_configs": [{"targets": ["alertmanager:9093"]}]}]
    # Prometheus reaches each target: a network in common.
    for name, target in (
        ("app", "app"),
        ("postgres-exporter", "postgres"),
        ("locust-master", "locust"),
        ("blackbox-exporter", "user-service-probe"),
    ):
        assert set(service(compose, name)["networks"]) & set(service(compose, "prometheus")["networks"]), target
    # Compose has no Redis (one replica): local use scrapes redis_exporter, compose does not.
    local["scrape_configs"] = [job for job in local["scrape_configs"] if job["job_name"] != "redis"]
    for document in (local, composed):
        for job in document["scrape_configs"]:
            job["static_configs"] = "targets"
            if job["job_name"] == "user-service-probe":
                job["relabel_configs"][-1]["replacement"] = "the exporter"
        document["alerting"] = "alertmanagers"
    assert composed == local


def test_the_compose_probe_verifies_nginx_certificate_with_the_shipped_module(compose: dict[str, Any]) -> None:
    shipped, composed = load_yaml(BLACKBOX_CONFIG), load_yaml(BLACKBOX_COMPOSE_CONFIG)
    exporter = service(compose, "blackbox-exporter")
    assert mount_source(exporter, "/etc/blackbox/blackbox.yml") == BLACKBOX_COMPOSE_CONFIG
    ca_file = composed["modules"]["http_2xx"]["http"].pop("tls_config")["ca_file"]
    assert composed == shipped
    # The CA is nginx's own certificate (self-signed), mounted as compose mounts secrets.
    assert ca_file == "/run/secrets/tls_certificate"
    assert "tls_certificate" in exporter["secrets"]
    assert "tls_certificate" in service(compose, "nginx")["secrets"]
    assert set(exporter["networks"]) & set(service(compose, "nginx")["networks"])
    # nginx answers to that name (its certificate carries it: deploy/compose-secrets.sh).
    assert re.search(r"server_name [^;]*\bnginx\b", (ROOT / "deploy" / "nginx" / "nginx.conf").read_text())
    assert "DNS:nginx" in (ROOT / "deploy" / "compose-secrets.sh").read_text()


def test_compose_alertmanager_routes_as_the_shipped_one_and_mails_mailpit(compose: dict[str, Any]) -> None:
    shipped, composed = load_yaml(ALERTMANAGER_CONFIG), load_yaml(ALERTMANAGER_COMPOSE_CONFIG)
    assert composed["route"] == shipped["route"]
    assert composed["inhibit_rules"] == shipped["inhibit_rules"]
    assert [r["name"] for r in composed["receivers"]] == [r["name"] for r in shipped["receivers"]]
    mailpit = environment(service(compose, "mailpit"))
    assert composed["global"]["smtp_smarthost"] == "mailpit:" + mailpit["MP_SMTP_BIND_ADDR"].rsplit(":", 1)[1]
    # Mail for people; the dead man's switch has nothing outside to reach on one machine.
    assert all(set(r) == {"name", "email_configs"} for r in composed["receivers"] if r["name"] != "deadman")
    assert {"name": "deadman"} in composed["receivers"]
    alertmanager = service(compose, "alertmanager")
    assert mount_source(alertmanager, "/etc/alertmanager/alertmanager.yml") == ALERTMANAGER_COMPOSE_CONFIG
    assert set(alertmanager["networks"]) & set(service(compose, "mailpit")["networks"])
    result = subprocess.run(
        [require("amtool"), "check-config", str(ALERTMANAGER_COMPOSE_CONFIG)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_prometheus_mounts_what_it_is_told_to_read(compose: dict[str, Any]) -> None:
    prometheus = service(compose, "prometheus")
    flags = {}
    for argument in prometheus["command"]:
        name, _, value = argument.removeprefix("--").partition("=")
        flags[name] = value
    assert flags["enable-feature"] == "exemplar-storage"
    # The SLO panels sum 30 days: the data must be there for them.
    retention = flags["storage.tsdb.retention.time"]
    assert retention.endswith("d")
    assert int(retention[:-1]) >= 30
    config_path = flags["config.file"]
    assert mount_source(prometheus, config_path) == PROMETHEUS_COMPOSE_CONFIG
    assert (
        mount_source(prometheus, str(Path(config_path).parent / "rules")) == PROMETHEUS_COMPOSE_CONFIG.parent / "rules"
    )


# --- OpenTelemetry Collector and Tempo -----------------------------------------------------------


def port_of(endpoint: str) -> int:
    return int(endpoint.rsplit(":", 1)[1].rstrip("/"))


def collector_problems(config: dict[str, Any]) -> list[str]:
    """What the collector itself would refuse at start (there is no otelcol binary to ask
    here: none on PyPI, Debian or npm), plus components defined and never used."""
    problems: list[str] = []
    used: dict[str, set[str]] = {"receivers": set(), "processors": set(), "exporters": set()}
    pipelines = config.get("service", {}).get("pipelines") or {}
    if not pipelines:
        problems.append("no pipelines")
    for pipeline_name, pipeline in pipelines.items():
        for kind, names in used.items():
            for component in pipeline.get(kind, []):
                names.add(component)
                if component not in (config.get(kind) or {}):
                    problems.append(f"pipeline {pipeline_name} uses an undefined {kind[:-1]} {component}")
        if not pipeline.get("receivers") or not pipeline.get("exporters"):
            problems.append(f"pipeline {pipeline_name} needs a receiver and an exporter")
        processors = pipeline.get("processors", [])
        if processors[:1] != ["memory_limiter"] or processors[-1:] != ["batch"]:
            problems.append(f"pipeline {pipeline_name}: memory_limiter must come first and batch last")
    for kind, names in used.items():
        problems += [f"{kind[:-1]} {name} is defined but unused" for name in set(config.get(kind) or {}) - names]
    return problems


def test_collector_pipelines_use_only_defined_components() -> None:
    config = load_yaml(COLLECTOR_CONFIG)
    assert collector_problems(config) == []
    broken = load_yaml(COLLECTOR_CONFIG)
    broken["service"]["pipelines"]["traces"]["exporters"] = ["otlp/jaeger"]
    assert "pipeline traces uses an undefined exporter otlp/jaeger" in collector_problems(broken)
    broken["service"]["pipelines"]["traces"]["processors"] = ["batch", "memory_limiter"]
    assert any("memory_limiter must come first" in problem for problem in collector_problems(broken))


def test_traces_flow_from_the_app_through_the_collector_to_tempo_and_grafana(compose: dict[str, Any]) -> None:
    collector, tempo = load_yaml(COLLECTOR_CONFIG), load_yaml(TEMPO_CONFIG)
    protocols = collector["receivers"]["otlp"]["protocols"]
    # The app exports OTLP over HTTP to the collector's service name and HTTP port.
    endpoint = environment(service(compose, "app"))["OTEL_EXPORTER_OTLP_ENDPOINT"]
    assert endpoint == f"http://otel-collector:{port_of(protocols['http']['endpoint'])}"
    for protocol in protocols.values():
        assert protocol["endpoint"].startswith("0.0.0.0:"), "a receiver on localhost refuses other containers"
    # The collector exports to Tempo's gRPC receiver.
    [exporter] = collector["exporters"].values()
    tempo_grpc = tempo["distributor"]["receivers"]["otlp"]["protocols"]["grpc"]["endpoint"]
    assert exporter["endpoint"] == f"tempo:{port_of(tempo_grpc)}"
    assert tempo_grpc.startswith("0.0.0.0:")
    otel = service(compose, "otel-collector")
    assert mount_source(otel, otel["command"][0].removeprefix("--config=")) == COLLECTOR_CONFIG
    # Grafana reads Tempo on its HTTP port.
    tempo_svc = service(compose, "tempo")
    assert mount_source(tempo_svc, tempo_svc["command"][0].removeprefix("-config.file=")) == TEMPO_CONFIG
    datasources = {d["type"]: d for d in load_yaml(GRAFANA_COMPOSE_DATASOURCES)["datasources"]}
    assert datasources["tempo"]["url"] == f"http://tempo:{tempo['server']['http_listen_port']}"


def test_tempo_stores_traces_in_its_volume(compose: dict[str, Any]) -> None:
    tempo = load_yaml(TEMPO_CONFIG)
    storage = tempo["storage"]["trace"]
    assert storage["backend"] == "local"
    volumes = [str(v) for v in service(compose, "tempo")["volumes"] if str(v).startswith("tempo-data:")]
    [mounted_at] = [volume.split(":")[1] for volume in volumes]
    for path in (storage["wal"]["path"], storage["local"]["path"]):
        assert Path(path).is_relative_to(mounted_at), f"{path} is outside the tempo-data volume"


# --- Grafana -------------------------------------------------------------------------------------


def test_compose_datasources_differ_from_the_local_ones_only_in_their_urls(compose: dict[str, Any]) -> None:
    local, composed = load_yaml(GRAFANA_LOCAL_DATASOURCES), load_yaml(GRAFANA_COMPOSE_DATASOURCES)
    urls = {d["uid"]: d.pop("url") for d in composed["datasources"]}
    for datasource in local["datasources"]:
        del datasource["url"]
    assert composed == local
    assert urls == {"prometheus": "http://prometheus:9090", "tempo": "http://tempo:3200"}
    uids = set(urls)
    for datasource in composed["datasources"]:
        for link in datasource.get("jsonData", {}).get("exemplarTraceIdDestinations", []):
            assert link["datasourceUid"] in uids


def grafana_problems(grafana: dict[str, Any]) -> list[str]:
    """Provisioning mounted where Grafana reads it, and the dashboard provider pointing at
    the folder the dashboards are mounted in."""
    problems: list[str] = []
    mounts = {target: source for source, target in bind_mounts(grafana)}
    for kind in ("datasources", "dashboards"):
        folder = mounts.get(f"/etc/grafana/provisioning/{kind}")
        if folder is None or not list(folder.glob("*.yml")):
            problems.append(f"no {kind} provisioning mounted")
    folder = mounts.get("/etc/grafana/provisioning/dashboards")
    for provisioning in sorted(folder.glob("*.yml")) if folder else []:
        for provider in load_yaml(provisioning)["providers"]:
            source = mounts.get(provider["options"]["path"])
            if source != DASHBOARDS_DIR:
                problems.append(f"{provisioning.name}: {provider['options']['path']} is not where the dashboards are")
    return problems


def test_grafana_gets_its_datasources_and_the_dashboards(compose: dict[str, Any]) -> None:
    grafana = service(compose, "grafana")
    assert grafana_problems(grafana) == []
    assert mount_source(grafana, "/etc/grafana/provisioning/datasources") == GRAFANA_COMPOSE_DATASOURCES.parent
    assert sorted(DASHBOARDS_DIR.glob("*.json"))
    broken = dict(grafana, volumes=[v.replace("/user-service:ro", "/users:ro") for v in grafana["volumes"]])
    assert grafana_problems(broken)


@pytest.mark.slow
async def test_a_page_in_the_compose_alertmanager_arrives_as_mail(tmp_path: Path) -> None:
    """The compose receivers for real: Debian's Alertmanager runs the compose config with
    only the smarthost moved from mailpit:1025 to a real SMTP server on loopback."""
    with smtp_server() as smtp:
        config = load_yaml(ALERTMANAGER_COMPOSE_CONFIG)
        config["global"]["smtp_smarthost"] = f"127.0.0.1:{smtp.port}"
        config_file = tmp_path / "alertmanager.yml"
        config_file.write_text(yaml.safe_dump(config, sort_keys=False))
        async with running_alertmanager(config_file, tmp_path) as url, httpx.AsyncClient(base_url=url) as client:
            now = datetime.now(UTC)
            alert = {
                "labels": {
                    "alertname": "UserServiceDown",
                    "job": "user-service",
                    "severity": "critical",
                    "urgency": "page",
                },
                "annotations": {"summary": "Every instance of the user service is down"},
                "startsAt": now.isoformat(),
                "endsAt": (now + timedelta(minutes=5)).isoformat(),
            }
            assert (await client.post("/api/v2/alerts", json=[alert])).status_code == 200
            # The page route's group_wait is 10 s.
            [mail] = await smtp.received_at_least(1, within=30)
    assert mail.recipients == ["on-call@localhost"]
    assert mail.message["Subject"] == "[PAGE FIRING] UserServiceDown: Every instance of the user service is down"
