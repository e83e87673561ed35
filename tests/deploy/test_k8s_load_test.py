"""The distributed load test (k8s/loadtest): Locust at the locked version, aimed at the
service and its master, configured with settings the scenarios read, let in by the
service's network policy, and the scenarios mounted from their ConfigMap really run."""

from __future__ import annotations

import copy
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

from deploy import k8s_artifacts
from tests.deploy import k8s_checks as checks
from tests.deploy.k8s_checks import Obj

LOADTEST_NAMESPACE = k8s_artifacts.LOCUST_NAMESPACE


def _locust_containers(objs: list[Obj]) -> dict[str, Obj]:
    return {d["metadata"]["name"]: checks.pod_spec(d)["containers"][0] for d in checks.of_kind(objs, "Deployment")}


def test_locust_runs_the_locked_version(rendered: dict[str, list[Obj]]) -> None:
    lock = tomllib.loads((checks.ROOT / "uv.lock").read_text())
    (version,) = [p["version"] for p in lock["package"] if p["name"] == "locust"]
    images = {name: c["image"] for name, c in _locust_containers(rendered["loadtest"]).items()}
    # The workers run the official image; the master the one with prometheus-client, built
    # FROM the same version (deploy/locust/Containerfile) and published by the release.
    assert images == {
        "locust-worker": f"docker.io/locustio/locust:{version}",
        "locust-master": f"ghcr.io/your-org/user-service-locust:{version}",
    }
    containerfile = (checks.ROOT / "deploy" / "locust" / "Containerfile").read_text()
    assert f"FROM docker.io/locustio/locust:{version}\n" in containerfile


def test_prometheus_scrapes_the_masters_figures(rendered: dict[str, list[Obj]]) -> None:
    objs = rendered["loadtest"]
    master = _locust_containers(objs)["locust-master"]
    env = {e["name"]: e.get("value") for e in master["env"]}
    ports = {p["name"]: p["containerPort"] for p in master["ports"]}
    assert int(env["LOADTEST_METRICS_PORT"]) == ports["metrics"]
    assert env["LOADTEST_METRICS_ADDRESS"] == "0.0.0.0"  # noqa: S104 - inside the pod, for Prometheus
    [monitor] = checks.of_kind(objs, "PodMonitor")
    [endpoint] = monitor["spec"]["podMetricsEndpoints"]
    assert endpoint["port"] == "metrics"
    assert endpoint["relabelings"] == [{"targetLabel": "job", "replacement": "locust"}]
    assert checks.custom_resource_problems(monitor) == []
    [policy] = [p for p in checks.of_kind(objs, "NetworkPolicy") if p["metadata"]["name"] == "locust-master"]
    admitted = {
        (peer.get("namespaceSelector", {}).get("matchLabels", {}).get("kubernetes.io/metadata.name"), port["port"])
        for rule in policy["spec"]["ingress"]
        for peer in rule["from"]
        for port in rule["ports"]
    }
    assert admitted == {(None, "workers"), ("monitoring", "metrics")}


def test_locust_targets_the_service_and_its_master(rendered: dict[str, list[Obj]]) -> None:
    service = checks.one(rendered["base"], "Service", "user-service")
    # The proxied port: the workers stand in for the ingress controller, whose
    # X-Forwarded-For (the simulated client addresses) the service believes only there.
    (port,) = [p for p in service["spec"]["ports"] if p["targetPort"] == "proxied"]
    master_service = checks.one(rendered["loadtest"], "Service", "locust-master")
    containers = _locust_containers(rendered["loadtest"])
    expected = f"--host=http://{service['metadata']['name']}.{service['metadata']['namespace']}.svc:{port['port']}"
    assert expected in containers["locust-master"]["args"]
    assert f"--master-host={master_service['metadata']['name']}" in containers["locust-worker"]["args"]
    master_ports = {p["name"] for p in containers["locust-master"]["ports"]}
    assert {p["targetPort"] for p in master_service["spec"]["ports"]} <= master_ports
    # Locust's defaults: the workers connect to 5557, the web UI listens on 8089.
    assert {p["port"] for p in master_service["spec"]["ports"]} == {5557, 8089}


def test_locust_settings_are_read_by_the_scenarios(rendered: dict[str, list[Obj]]) -> None:
    sources = (checks.ROOT / "loadtests" / "scenarios" / "config.py").read_text()
    read = set(re.findall(r"\"(LOADTEST_[A-Z_]+)\"", sources))
    given = set(checks.configmap_data(rendered["loadtest"], "locust"))
    assert given <= read, given - read
    assert "LOADTEST_PASSWORD" in read  # from the Secret "locust", which the docs create


def test_load_test_pods_and_policy(rendered: dict[str, list[Obj]]) -> None:
    objs = rendered["loadtest"]
    assert not checks.security_problems(objs)
    assert {o["metadata"].get("namespace") for o in objs if o["kind"] != "Namespace"} == {
        LOADTEST_NAMESPACE,
        "user-service",  # only the policy that lets the workers in
    }
    assert [o["kind"] for o in objs if o["metadata"].get("namespace") == "user-service"] == ["NetworkPolicy"]
    # With the service's own policy, only the ingress controller, Prometheus and the workers get in.
    union = rendered["overlays/prod"] + objs
    assert not checks.network_policy_problems(union, checks.INGRESS_NAMESPACES | {LOADTEST_NAMESPACE})
    assert checks.network_policy_problems(union), "without the load-test namespace allowed, the check must object"


def _mount_scenarios(objs: list[Obj], destination: Path) -> Path:
    """Lay the ConfigMap's files out as the kubelet does for the worker's volume."""
    worker = checks.pod_spec(checks.one(objs, "Deployment", "locust-worker"))
    (volume,) = [v for v in worker["volumes"] if v["name"] == k8s_artifacts.LOCUST_VOLUME]
    data = checks.configmap_data(objs, volume["configMap"]["name"])
    (mount,) = [
        m["mountPath"] for m in worker["containers"][0]["volumeMounts"] if m["name"] == k8s_artifacts.LOCUST_VOLUME
    ]
    package = destination / Path(mount).name
    for item in volume["configMap"]["items"]:
        (package / item["path"]).parent.mkdir(parents=True, exist_ok=True)
        (package / item["path"]).write_text(data[item["key"]])
    return package


def _locust_list(package: Path, objs: list[Obj]) -> tuple[subprocess.CompletedProcess[str], list[str]]:
    """`locust --list` on the mounted locustfile, with only the mount on the path (as in the
    pod: PYTHONPATH is the mount's parent) and the step shape on, so shapes.py loads too."""
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("LOADTEST_")},
        **checks.configmap_data(objs, "locust"),
        "PYTHONPATH": str(package.parent),
        "PYTHONDONTWRITEBYTECODE": "1",
        "LOADTEST_PASSWORD": "not-used-by---list",
        "LOADTEST_SHAPE": "step",
    }
    probe = "import loadtests.scenarios.users as m, loadtests.shapes as s; print(m.__file__); print(s.__file__)"
    where = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=package.parent,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    listed = subprocess.run(
        [sys.executable, "-m", "locust", "-f", str(package / "locustfile.py"), "--list"],
        check=False,
        cwd=package.parent,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    return listed, where.stdout.split()


@pytest.mark.slow  # starts Locust
def test_the_mounted_scenarios_load_in_locust(rendered: dict[str, list[Obj]], tmp_path: Path) -> None:
    package = _mount_scenarios(rendered["loadtest"], tmp_path)
    result, imported_from = _locust_list(package, rendered["loadtest"])
    assert result.returncode == 0, result.stdout + result.stderr
    # From the mounted copy, not from the repository's loadtests/.
    assert len(imported_from) == 2, imported_from
    assert all(Path(path).is_relative_to(package) for path in imported_from), imported_from
    assert {"LoginStorm", "ApiClient", "SignUp", "AdminBrowser"} <= set(result.stdout.split()), result.stdout


@pytest.mark.slow  # starts Locust
def test_a_scenario_missing_from_the_configmap_breaks_locust(rendered: dict[str, list[Obj]], tmp_path: Path) -> None:
    objs = copy.deepcopy(rendered["loadtest"])
    worker = checks.pod_spec(checks.one(objs, "Deployment", "locust-worker"))
    (volume,) = [v for v in worker["volumes"] if v["name"] == k8s_artifacts.LOCUST_VOLUME]
    volume["configMap"]["items"] = [i for i in volume["configMap"]["items"] if i["path"] != "scenarios/users.py"]
    result, _ = _locust_list(_mount_scenarios(objs, tmp_path), objs)
    assert result.returncode != 0
    assert "users" in result.stderr


def test_generated_volume_lists_every_imported_module() -> None:
    paths = {str(p.relative_to(k8s_artifacts.LOADTESTS_DIR)) for p in k8s_artifacts.locust_files()}
    assert {"locustfile.py", "__init__.py", "scenarios/__init__.py", "scenarios/users.py", "shapes.py"} <= paths
    # Only what the locustfile needs: the runner and the benchmarks stay out.
    assert not paths & {"runner.py", "bench_capacity.py", "gates.py"}
    patch = yaml.safe_load(k8s_artifacts.LOCUST_VOLUME_FILE.read_text().split("---", 1)[1])
    items = patch["spec"]["template"]["spec"]["volumes"][0]["configMap"]["items"]
    assert {item["path"] for item in items} == paths
