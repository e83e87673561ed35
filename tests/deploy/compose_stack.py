"""The compose stack as the tests see it: docker-compose.yml resolved by podman-compose, the
paths of the configs it mounts, and small readers for both (tests/deploy/test_compose*.py)."""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.artifacts import ROOT

COMPOSE_FILE = ROOT / "docker-compose.yml"
ENV_EXAMPLE = ROOT / ".env.example"
NGINX_CONFIG = ROOT / "deploy" / "nginx" / "nginx.conf"
COLLECTOR_CONFIG = ROOT / "deploy" / "otel-collector" / "config.yaml"
TEMPO_CONFIG = ROOT / "deploy" / "tempo" / "tempo.yaml"
PROMETHEUS_COMPOSE_CONFIG = ROOT / "deploy" / "prometheus" / "prometheus.compose.yml"
BLACKBOX_COMPOSE_CONFIG = ROOT / "deploy" / "blackbox" / "blackbox.compose.yml"
GRAFANA_LOCAL_DATASOURCES = ROOT / "deploy" / "grafana" / "provisioning" / "datasources" / "user-service.yml"
GRAFANA_COMPOSE_DATASOURCES = ROOT / "deploy" / "grafana" / "provisioning-compose" / "datasources" / "user-service.yml"
SECRETS_SCRIPT = ROOT / "deploy" / "compose-secrets.sh"
LOCUSTFILE = ROOT / "loadtests" / "locustfile.py"

APP_IMAGE = "user-service:local"
# Locust's image plus prometheus-client, built by compose from deploy/locust/.
LOCUST_IMAGE = "user-service-locust:local"
ALERTMANAGER_COMPOSE_CONFIG = ROOT / "deploy" / "alertmanager" / "alertmanager.compose.yml"
LOCUST_CONTAINERFILE = ROOT / "deploy" / "locust" / "Containerfile"
# Every service, the load profile's included.
SERVICES = {
    *("postgres", "migrate", "app", "nginx", "mailpit", "otel-collector", "tempo", "prometheus", "grafana"),
    *("alertmanager", "postgres-exporter", "blackbox-exporter"),
}
LOAD_SERVICES = {"loadtest-seed", "locust-master", "locust-worker"}
# Pinned by version only: no digest for these could be verified (never invent one).
TAG_ONLY_IMAGES = {
    *("otel/opentelemetry-collector", "locustio/locust", "axllent/mailpit"),
    *("prom/alertmanager", "quay.io/prometheuscommunity/postgres-exporter", "quay.io/prometheus/blackbox-exporter"),
}
# The service's own containers: every process that may write a mail.
SERVICE_CONTAINERS = ("app", "migrate", "loadtest-seed")
# What compose needs to interpolate the file: stand-ins for the secrets of .env.
FAKE_ENV = {"POSTGRES_PASSWORD": "compose-test-password", "GRAFANA_ADMIN_PASSWORD": "compose-test-grafana"}
# README, "Performance": the service's RSS after start-up, before any hash.
START_RSS_MIB = 204
# The containers' tmpfs, where a read-only root filesystem leaves them room to write.
TMPFS = "/tmp"  # noqa: S108 - a path inside the containers, not a file of this test
SECURITY_HEADERS = (
    "strict-transport-security",
    "x-content-type-options",
    "x-frame-options",
    "content-security-policy",
    "referrer-policy",
)


def require(tool: str) -> str:
    """The tool's path, or a failure (never a skip: CI must run these checks)."""
    path = shutil.which(tool) or shutil.which(tool, path="/usr/sbin:/sbin")
    if path is None:
        pytest.fail(f"`{tool}` is not installed; scripts/test installs it on Debian/Ubuntu (apt-get install {tool}).")
    return path


def load_yaml(path: Path) -> dict[str, Any]:
    document = yaml.safe_load(path.read_text())
    assert isinstance(document, dict), f"{path}: expected a mapping"
    return document


# --- the compose file, through podman-compose --------------------------------------------------


def podman_compose(compose_file: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """``podman-compose config`` (no container engine needed) with ``env`` as the env file,
    in an environment stripped of the machine's variables so that only ``env`` counts."""
    with tempfile.TemporaryDirectory() as folder:
        env_file = Path(folder) / "env"
        env_file.write_text("".join(f"{name}={value}\n" for name, value in env.items()))
        return subprocess.run(
            [
                sys.executable,
                "-m",
                "podman_compose",
                *args,
                "--env-file",
                str(env_file),
                "-f",
                str(compose_file),
                "config",
            ],
            cwd=compose_file.parent,
            env={"PATH": os.environ["PATH"], "HOME": folder},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )


@functools.cache
def resolved_compose() -> dict[str, Any]:
    """The compose file as podman-compose resolves it (anchors merged, variables filled in),
    with the load profile's services."""
    result = podman_compose(COMPOSE_FILE, FAKE_ENV, "--profile", "load")
    assert result.returncode == 0, result.stderr
    document = yaml.safe_load(result.stdout)
    assert isinstance(document, dict)
    return document


def service(compose: dict[str, Any], name: str) -> dict[str, Any]:
    found = compose["services"][name]
    assert isinstance(found, dict)
    return found


def environment(svc: dict[str, Any]) -> dict[str, str]:
    env = svc.get("environment") or {}
    assert isinstance(env, dict), "environment must be a mapping"
    return {str(k): str(v) for k, v in env.items()}


def bind_mounts(svc: dict[str, Any]) -> list[tuple[Path, str]]:
    """(host path, container path) of every bind mount; named volumes are left out."""
    mounts = []
    for volume in svc.get("volumes", []):
        source, target = str(volume).split(":")[:2]
        if source.startswith((".", "/")):
            mounts.append(((COMPOSE_FILE.parent / source).resolve(), target))
    return mounts


def mount_source(svc: dict[str, Any], target: str) -> Path:
    sources = [source for source, mounted_at in bind_mounts(svc) if mounted_at == target]
    assert len(sources) == 1, f"nothing (or several things) mounted at {target}: {bind_mounts(svc)}"
    return sources[0]
