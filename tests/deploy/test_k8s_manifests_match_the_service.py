"""The Kubernetes manifests (k8s/): every kustomization renders with `kubectl kustomize`,
every object validates strictly (core kinds with kubernetes-validate, custom resources
against the CRDs in tests/data/crds), the rendered objects agree with the service's code
(settings, routes, timings), the generated copies match their sources, and the Locust
scenarios mounted from their ConfigMap really run. Every check is also shown failing on
a deliberately broken copy (the ``*_rejects_*`` tests)."""

from __future__ import annotations

import copy
import os
import re
import secrets
import shutil
import subprocess
import sys
import time
import tomllib
from collections.abc import Callable
from pathlib import Path

import httpx
import kubernetes_validate  # type: ignore[import-untyped]
import pytest
import yaml

from app.auth.tokens import generate_private_key_pem
from deploy import generate, k8s_artifacts
from tests.deploy import k8s_checks as checks
from tests.deploy.k8s_checks import Obj
from tests.server_process import free_port

RENDERINGS = ("base", "overlays/dev", "overlays/prod", "loadtest")
SERVICE_RENDERINGS = ("base", "overlays/dev", "overlays/prod")
CUSTOM_GROUPS = ("monitoring.coreos.com", "postgresql.cnpg.io")
LOADTEST_NAMESPACE = k8s_artifacts.LOCUST_NAMESPACE


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return checks.prepare_tree(tmp_path_factory.mktemp("manifests"))


@pytest.fixture(scope="module")
def rendered(tree: Path) -> dict[str, list[Obj]]:
    return {name: checks.render(tree / name) for name in RENDERINGS}


def _is_custom(obj: Obj) -> bool:
    return str(obj["apiVersion"]).split("/")[0] in CUSTOM_GROUPS


# --- rendering and schemas ---------------------------------------------------------------


def test_every_kustomization_renders_what_it_should(rendered: dict[str, list[Obj]]) -> None:
    kinds = {name: {o["kind"] for o in objs} for name, objs in rendered.items()}
    base = {
        "Namespace", "ServiceAccount", "ConfigMap", "Deployment", "Service", "Ingress", "HorizontalPodAutoscaler",
        "PodDisruptionBudget", "NetworkPolicy", "Job", "ServiceMonitor", "PrometheusRule",
    }  # fmt: skip
    assert base <= kinds["base"], base - kinds["base"]
    assert kinds["overlays/prod"] == base | {"Cluster"}
    assert kinds["overlays/dev"] == (base - {"HorizontalPodAutoscaler"}) | {"Secret", "StatefulSet"}
    assert checks.one(rendered["overlays/prod"], "Cluster", "user-service-db")["spec"]["instances"] == 3
    assert checks.server(rendered["overlays/dev"])["spec"]["replicas"] == 1
    locust = {o["metadata"]["name"] for o in checks.of_kind(rendered["loadtest"], "Deployment")}
    assert locust == {"locust-master", "locust-worker"}


def test_a_broken_kustomization_does_not_render(tree: Path, tmp_path: Path) -> None:
    broken = shutil.copytree(tree, tmp_path / "without-deployment")
    (broken / "base" / "deployment.yaml").unlink()
    with pytest.raises(checks.RenderError, match=r"deployment\.yaml"):
        checks.render(broken / "overlays" / "prod")
    # The dev overlay without its git-ignored key stops with a message that names the file.
    broken = shutil.copytree(tree, tmp_path / "without-key")
    (broken / "overlays" / "dev" / "signing.pem").unlink()
    with pytest.raises(checks.RenderError, match=r"signing\.pem"):
        checks.render(broken / "overlays" / "dev")


@pytest.mark.parametrize("version", checks.KUBERNETES_VERSIONS)
@pytest.mark.parametrize("name", RENDERINGS)
def test_core_objects_validate_strictly(rendered: dict[str, list[Obj]], name: str, version: str) -> None:
    problems: list[str] = []
    for obj in [o for o in rendered[name] if not _is_custom(o)]:
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            path = ".".join(map(str, exc.path))
            problems.append(f"{obj['kind']}/{obj['metadata']['name']} {path}: {exc.message}")
    assert not problems, "\n".join(problems)


def test_strict_validation_rejects_an_unknown_field(rendered: dict[str, list[Obj]]) -> None:
    deployment = copy.deepcopy(checks.server(rendered["overlays/prod"]))
    deployment["spec"]["template"]["spec"]["containers"][0]["livenessprobe"] = {}  # a typo
    with pytest.raises(kubernetes_validate.ValidationError, match="livenessprobe"):
        kubernetes_validate.validate(deployment, checks.KUBERNETES_VERSIONS[0], strict=True)


def test_custom_resources_match_their_crds(rendered: dict[str, list[Obj]]) -> None:
    customs = [o for name in SERVICE_RENDERINGS for o in rendered[name] if _is_custom(o)]
    assert {o["kind"] for o in customs} == {"ServiceMonitor", "PrometheusRule", "Cluster"}
    problems = [f"{o['kind']}: {p}" for o in customs for p in checks.custom_resource_problems(o)]
    assert not problems, "\n".join(problems)


def _endpoint(objs: list[Obj]) -> Obj:
    endpoint: Obj = checks.one(objs, "ServiceMonitor", "user-service")["spec"]["endpoints"][0]
    return endpoint


def _first_rule(objs: list[Obj]) -> Obj:
    rule: Obj = checks.one(objs, "PrometheusRule", "user-service")["spec"]["groups"][0]["rules"][0]
    return rule


def _cluster(objs: list[Obj]) -> Obj:
    return checks.one(objs, "Cluster", "user-service-db")


CRD_BREAKAGES: dict[str, tuple[str, Callable[[list[Obj]], object]]] = {
    "misspelt endpoint field": ("ServiceMonitor", lambda objs: _endpoint(objs).update(intervall="15s")),
    "rule without expr": ("PrometheusRule", lambda objs: _first_rule(objs).pop("expr")),
    "misspelt rule field": ("PrometheusRule", lambda objs: _first_rule(objs).update(labelz={})),
    "instances not a number": ("Cluster", lambda objs: _cluster(objs)["spec"].update(instances="three")),
    "unknown Cluster field": ("Cluster", lambda objs: _cluster(objs)["spec"].update(backups={})),
    "misspelt metadata": ("Cluster", lambda objs: _cluster(objs)["metadata"].update(lables={})),
}


@pytest.mark.parametrize("breakage", CRD_BREAKAGES)
def test_crd_check_rejects_a_broken_custom_resource(rendered: dict[str, list[Obj]], breakage: str) -> None:
    kind, breaks = CRD_BREAKAGES[breakage]
    objs = copy.deepcopy(rendered["overlays/prod"])
    breaks(objs)
    (broken,) = checks.of_kind(objs, kind)
    assert checks.custom_resource_problems(broken)


# --- the manifests against the service ---------------------------------------------------

CHECKS: dict[str, Callable[[list[Obj]], list[str]]] = {
    "environment names": checks.env_name_problems,
    "settings": checks.settings_problems,
    "pod fit": checks.pod_fit_problems,
    "probes": checks.probe_problems,
    "security": checks.security_problems,
    "service": checks.service_problems,
    "ingress": checks.ingress_problems,
    "network policy": checks.network_policy_problems,
    "service monitor": checks.service_monitor_problems,
    "migration": checks.migration_problems,
    "autoscaling": checks.autoscaling_problems,
    "generated copies": checks.copies_problems,
}


@pytest.mark.parametrize("check", CHECKS)
@pytest.mark.parametrize("name", SERVICE_RENDERINGS)
def test_manifests_agree_with_the_service(rendered: dict[str, list[Obj]], name: str, check: str) -> None:
    problems = CHECKS[check](rendered[name])
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("name", RENDERINGS)
def test_every_reference_resolves(rendered: dict[str, list[Obj]], name: str) -> None:
    problems = checks.reference_problems(rendered[name], checks.EXTERNAL_SECRETS[name])
    assert not problems, "\n".join(problems)


def test_pods_run_as_the_images_user(rendered: dict[str, list[Obj]]) -> None:
    uid = checks.image_user()
    for name in SERVICE_RENDERINGS:
        for workload in [checks.server(rendered[name]), checks.one(rendered[name], "Job", "user-service-migrate")]:
            assert checks.pod_spec(workload)["securityContext"]["runAsUser"] == uid, (name, workload["kind"])


# Each breakage: the check that must catch it, the rendering it breaks, and how.
def _server_container(objs: list[Obj]) -> Obj:
    container: Obj = checks.pod_spec(checks.server(objs))["containers"][0]
    return container


def _configmap(objs: list[Obj]) -> dict[str, str]:
    (name,) = [s["configMapRef"]["name"] for s in _server_container(objs)["envFrom"] if "configMapRef" in s]
    data: dict[str, str] = checks.one(objs, "ConfigMap", name)["data"]
    return data


def _env(objs: list[Obj], name: str) -> Obj:
    (entry,) = [e for e in _server_container(objs)["env"] if e["name"] == name]
    found: Obj = entry
    return found


def _rename_key(data: dict[str, str], old: str, new: str) -> None:
    data[new] = data.pop(old)


def _ingress_paths(objs: list[Obj]) -> list[Obj]:
    paths: list[Obj] = checks.one(objs, "Ingress", "user-service")["spec"]["rules"][0]["http"]["paths"]
    return paths


def _route(path: str, kind: str) -> Obj:
    backend = {"service": {"name": "user-service", "port": {"name": "http"}}}
    return {"path": path, "pathType": kind, "backend": backend}


def _policy(objs: list[Obj]) -> Obj:
    spec: Obj = checks.one(objs, "NetworkPolicy", "user-service")["spec"]
    return spec


def _pod(objs: list[Obj], kind: str = "Deployment", name: str = "user-service") -> Obj:
    return checks.pod_spec(checks.one(objs, kind, name))


def _probe(objs: list[Obj], probe: str) -> Obj:
    spec: Obj = _server_container(objs)[probe]
    return spec


BREAKAGES: dict[str, tuple[str, str, Callable[[list[Obj]], object]]] = {
    # A misspelt group (PASSWORD, not PASSWORDS) is ignored by the settings, silently.
    "misspelt setting": (
        "environment names",
        "overlays/prod",
        lambda objs: _rename_key(
            _configmap(objs), "USER_SERVICE_PASSWORDS__POOL_SIZE", "USER_SERVICE_PASSWORD__POOL_SIZE"
        ),
    ),
    "unknown OTEL variable": (
        "environment names",
        "overlays/dev",
        lambda objs: _configmap(objs).update(OTEL_EXPORTER_OTLP_ENDPIONT="http://x:4318"),
    ),
    "URL built before its parts": (
        "environment names",
        "overlays/prod",
        lambda objs: _server_container(objs)["env"].reverse(),
    ),
    "invalid setting value": (
        "settings",
        "overlays/dev",
        lambda objs: _configmap(objs).update(USER_SERVICE_LOGGING__FORMAT="yaml"),
    ),
    "listens on localhost": (
        "settings",
        "overlays/prod",
        lambda objs: _configmap(objs).pop("USER_SERVICE_SERVER__HOST"),
    ),
    "psycopg2 URL (CloudNativePG's uri as is)": (
        "settings",
        "overlays/prod",
        lambda objs: _env(objs, "USER_SERVICE_DB__URL").update(value="postgresql://$(DB_USER)@$(DB_HOST)/$(DB_NAME)"),
    ),
    "container port not the server's": (
        "settings",
        "overlays/dev",
        lambda objs: _server_container(objs)["ports"][0].update(containerPort=8080),
    ),
    "pool larger than the CPU limit": (
        "pod fit",
        "overlays/prod",
        lambda objs: _configmap(objs).update(USER_SERVICE_PASSWORDS__POOL_SIZE="4"),
    ),
    "memory below the hashing bound": (
        "pod fit",
        "overlays/prod",
        lambda objs: _server_container(objs)["resources"].update(
            limits={"cpu": "2", "memory": "256Mi"}, requests={"cpu": "2", "memory": "256Mi"}
        ),
    ),
    "grace period shorter than the drain": (
        "pod fit",
        "overlays/prod",
        lambda objs: _pod(objs).update(terminationGracePeriodSeconds=30),
    ),
    "no writable /tmp": (
        "pod fit",
        "overlays/dev",
        lambda objs: _server_container(objs)["volumeMounts"].pop(0),
    ),
    "liveness probe on readiness": (
        "probes",
        "overlays/prod",
        lambda objs: _probe(objs, "livenessProbe")["httpGet"].update(path="/health/ready"),
    ),
    "no startup probe": ("probes", "overlays/prod", lambda objs: _server_container(objs).pop("startupProbe")),
    "readiness timeout under the DB check's": (
        "probes",
        "overlays/dev",
        lambda objs: _probe(objs, "readinessProbe").update(timeoutSeconds=2),
    ),
    "writable root filesystem": (
        "security",
        "overlays/prod",
        lambda objs: _server_container(objs)["securityContext"].update(readOnlyRootFilesystem=False),
    ),
    "root user in the Job": (
        "security",
        "overlays/prod",
        lambda objs: _pod(objs, "Job", "user-service-migrate")["securityContext"].update(runAsUser=0),
    ),
    "capabilities kept": (
        "security",
        "overlays/dev",
        lambda objs: _server_container(objs)["securityContext"]["capabilities"].update(drop=[]),
    ),
    "service account token mounted": (
        "security",
        "overlays/prod",
        lambda objs: _pod(objs).pop("automountServiceAccountToken"),
    ),
    "service links on": ("security", "overlays/prod", lambda objs: _pod(objs).update(enableServiceLinks=True)),
    "no seccomp in dev PostgreSQL": (
        "security",
        "overlays/dev",
        lambda objs: _pod(objs, "StatefulSet", "postgres")["securityContext"].pop("seccompProfile"),
    ),
    "Service selects the migration pod": (
        "service",
        "overlays/prod",
        lambda objs: checks.one(objs, "Service", "user-service")["spec"]["selector"].pop("app.kubernetes.io/component"),
    ),
    "catch-all ingress path": (
        "ingress",
        "overlays/prod",
        lambda objs: _ingress_paths(objs).append(_route("/", "Prefix")),
    ),
    "/metrics routed": (
        "ingress",
        "overlays/prod",
        lambda objs: _ingress_paths(objs).append(_route("/metrics", "Exact")),
    ),
    "regex path reaching /metrics": (
        "ingress",
        "overlays/dev",
        lambda objs: _ingress_paths(objs).append(_route("/(api|metrics)", "ImplementationSpecific")),
    ),
    "default backend": (
        "ingress",
        "overlays/prod",
        lambda objs: checks.one(objs, "Ingress", "user-service")["spec"].update(
            defaultBackend={"service": {"name": "user-service", "port": {"name": "http"}}}
        ),
    ),
    "ingress path to nowhere": (
        "ingress",
        "overlays/prod",
        lambda objs: _ingress_paths(objs).append(_route("/v2", "Prefix")),
    ),
    "ingress open to all": ("network policy", "overlays/prod", lambda objs: _policy(objs)["ingress"][0].pop("from")),
    "ingress from another namespace": (
        "network policy",
        "overlays/prod",
        lambda objs: _policy(objs)["ingress"][0]["from"][0]["namespaceSelector"]["matchLabels"].update(
            {"kubernetes.io/metadata.name": "default"}
        ),
    ),
    "egress to the internet": (
        "network policy",
        "overlays/prod",
        lambda objs: _policy(objs)["egress"].append({"ports": [{"port": 443, "protocol": "TCP"}]}),
    ),
    "egress unrestricted": (
        "network policy",
        "overlays/dev",
        lambda objs: _policy(objs)["policyTypes"].remove("Egress"),
    ),
    "job label not user-service": (
        "service monitor",
        "overlays/prod",
        lambda objs: checks.one(objs, "ServiceMonitor", "user-service")["spec"].update(
            jobLabel="app.kubernetes.io/component"
        ),
    ),
    "scrape path not a route": ("service monitor", "overlays/prod", lambda objs: _endpoint(objs).update(path="/stats")),
    "migration prompts": (
        "migration",
        "overlays/prod",
        lambda objs: _pod(objs, "Job", "user-service-migrate")["containers"][0]["command"].remove("--no-prompt"),
    ),
    "migration with another configuration": (
        "migration",
        "overlays/prod",
        lambda objs: _pod(objs, "Job", "user-service-migrate")["containers"][0]["env"].pop(),
    ),
    "replicas fighting the autoscaler": (
        "autoscaling",
        "overlays/prod",
        lambda objs: checks.server(objs)["spec"].update(replicas=3),
    ),
    "more pods than PostgreSQL connections": (
        "autoscaling",
        "overlays/prod",
        lambda objs: _cluster(objs)["spec"]["postgresql"]["parameters"].update(max_connections="100"),
    ),
    "rule edited in the PrometheusRule": (
        "generated copies",
        "overlays/prod",
        lambda objs: _first_rule(objs).update(expr="vector(1)"),
    ),
    "dashboard edited in its ConfigMap": (
        "generated copies",
        "base",
        lambda objs: checks.one(objs, "ConfigMap", "user-service-dashboard-auth")["data"].update(
            {"auth.json": '{"title": "edited"}'}
        ),
    ),
}


@pytest.mark.parametrize("breakage", BREAKAGES)
def test_check_rejects_a_broken_manifest(rendered: dict[str, list[Obj]], breakage: str) -> None:
    check, name, breaks = BREAKAGES[breakage]
    objs = copy.deepcopy(rendered[name])
    assert not CHECKS[check](objs), "the unbroken rendering must pass first"
    breaks(objs)
    assert CHECKS[check](objs), f"the {check} check missed: {breakage}"


def test_reference_check_rejects_a_missing_secret(rendered: dict[str, list[Obj]]) -> None:
    objs = copy.deepcopy(rendered["overlays/dev"])
    _env(objs, "USER_SERVICE_DB__URL")["valueFrom"]["secretKeyRef"]["name"] = "user-service-database"
    assert checks.reference_problems(objs, checks.EXTERNAL_SECRETS["overlays/dev"])
    objs = copy.deepcopy(rendered["overlays/prod"])
    _env(objs, "DB_HOST")["valueFrom"]["secretKeyRef"]["key"] = "hostname"  # not a key CloudNativePG writes
    assert checks.reference_problems(objs, checks.EXTERNAL_SECRETS["overlays/prod"])
    objs = copy.deepcopy(rendered["overlays/dev"])
    del checks.one(objs, "Secret", _env(objs, "USER_SERVICE_DB__URL")["valueFrom"]["secretKeyRef"]["name"])["metadata"][
        "namespace"
    ]
    assert checks.reference_problems(objs, checks.EXTERNAL_SECRETS["overlays/dev"])


# --- the generated copies ----------------------------------------------------------------


def test_generated_files_are_current() -> None:
    stale = [str(path.relative_to(checks.ROOT)) for path in generate.stale(generate.rendered())]
    assert not stale, f"{stale} differ from their sources: run `{generate.COMMAND}`"
    assert generate.main(["--check"]) == 0


def test_drift_check_rejects_an_edited_copy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path, text = k8s_artifacts.PROMETHEUS_RULE_FILE, k8s_artifacts.rendered()[k8s_artifacts.PROMETHEUS_RULE_FILE]
    edited = tmp_path / path.name
    edited.write_text(text.replace("for: 2m", "for: 20m", 1))
    assert edited.read_text() != text
    monkeypatch.setattr(generate, "rendered", lambda: {edited: text, tmp_path / "missing.yaml": text})
    assert generate.stale(generate.rendered()) == [edited, tmp_path / "missing.yaml"]
    assert generate.main(["--check"]) == 1


def test_grafana_generator_also_writes_the_dashboards_copy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from deploy.grafana import generate as grafana_generate

    copy_file = tmp_path / "dashboards.yaml"
    monkeypatch.setattr(grafana_generate, "rendered", dict)  # leave the real JSON alone
    monkeypatch.setattr(k8s_artifacts, "dashboard_copies", lambda: {copy_file: "copy\n"})
    assert grafana_generate.main(["--check"]) == 1  # the missing copy under k8s/ counts
    assert grafana_generate.main([]) == 0
    assert copy_file.read_text() == "copy\n"
    assert grafana_generate.main(["--check"]) == 0


# --- the distributed load test -----------------------------------------------------------


def _locust_containers(objs: list[Obj]) -> dict[str, Obj]:
    return {d["metadata"]["name"]: checks.pod_spec(d)["containers"][0] for d in checks.of_kind(objs, "Deployment")}


def test_locust_runs_the_locked_version(rendered: dict[str, list[Obj]]) -> None:
    lock = tomllib.loads((checks.ROOT / "uv.lock").read_text())
    (version,) = [p["version"] for p in lock["package"] if p["name"] == "locust"]
    for name, container in _locust_containers(rendered["loadtest"]).items():
        assert container["image"].endswith(f"/locust:{version}"), (name, container["image"], version)


def test_locust_targets_the_service_and_its_master(rendered: dict[str, list[Obj]]) -> None:
    service = checks.one(rendered["base"], "Service", "user-service")
    (port,) = service["spec"]["ports"]
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


# --- the rendered Deployment, run ----------------------------------------------------------


def for_podman(objs: list[Obj], database_url: str, key_dir: Path, port: int) -> list[Obj]:
    """The dev overlay's server Deployment and ConfigMap, changed only where podman 4.3's
    `kube play` cannot follow Kubernetes (each change says why); everything else (image
    entry point, envFrom, probes, securityContext, read-only root, /tmp emptyDir, the key
    mounted where the ConfigMap says) runs as rendered."""
    deployment = copy.deepcopy(checks.server(objs))
    pod = checks.pod_spec(deployment)
    spec = pod["containers"][0]
    (configmap_name,) = [s["configMapRef"]["name"] for s in spec["envFrom"]]
    configmap = copy.deepcopy(checks.one(objs, "ConfigMap", configmap_name))
    # Host networking, to reach the test PostgreSQL on 127.0.0.1; podman then refuses port
    # mappings, so the named port goes and the probes name its number.
    pod["hostNetwork"] = True
    configmap["data"]["USER_SERVICE_SERVER__PORT"] = str(port)
    spec.pop("ports")
    for probe in checks.PROBES:
        spec[probe]["httpGet"]["port"] = port
    # Secrets: podman 4.3 crashes (nil pointer in VolumeFromSecret) on secret volumes and
    # has no Secret kind, so the key comes from a host folder and the URL as a value.
    for volume in pod["volumes"]:
        if "secret" in volume:
            del volume["secret"]
            volume["hostPath"] = {"path": str(key_dir), "type": "Directory"}
    spec["env"] = [{"name": "USER_SERVICE_DB__URL", "value": database_url}]
    # podman's kube play does not create a missing working directory on a read-only root
    # (`podman run` and Kubernetes' runtimes do), and a buildah-built image has no /app.
    spec["workingDir"] = "/tmp"  # noqa: S108 - the pod's writable emptyDir
    return [configmap, deployment]


@pytest.mark.container
@pytest.mark.slow
def test_the_rendered_deployment_runs_under_podman_kube_play(
    rendered: dict[str, list[Obj]], migrated_database: str, tmp_path: Path
) -> None:
    from tests.deploy.test_container_image import CONTAINERS_CONF, IMAGE, UID, podman

    if podman("image", "exists", IMAGE, check=False).returncode != 0:
        pytest.fail(f"{IMAGE} is missing: tests/deploy/test_container_image.py builds it (run it first)")
    key_dir = tmp_path / "jwt"
    key_dir.mkdir()
    (key_dir / "signing.pem").write_bytes(generate_private_key_pem())
    (key_dir / "signing.pem").chmod(0o444)
    port = free_port()
    objs = for_podman(rendered["overlays/dev"], migrated_database, key_dir, port)
    checks.pod_spec(objs[1])["containers"][0]["image"] = IMAGE
    manifest = tmp_path / "user-service.yaml"
    manifest.write_text(yaml.safe_dump_all(objs, sort_keys=False))
    assert CONTAINERS_CONF.is_file()
    podman("kube", "play", "--network", "host", str(manifest), timeout=180)
    try:
        (container,) = podman("ps", "--filter", "pod=user-service-pod-0", "--format", "{{.Names}}").stdout.split()[-1:]
        base = f"http://127.0.0.1:{port}"
        ready = _wait_ready(f"{base}/health/ready", podman, container)
        assert ready["checks"] == {"startup": "ok", "draining": "ok", "database": "ok"}
        password, username = "violet-tangerine-47-harbor", f"kube{secrets.token_hex(4)}"
        with httpx.Client(base_url=base, timeout=15) as client:
            email = f"{username}@example.com"
            created = client.post(
                "/api/v1/auth/register", json={"username": username, "email": email, "password": password}
            )
            assert created.status_code == 201, created.text
            login = client.post("/api/v1/auth/login", json={"username": username, "password": password})
            assert login.status_code == 200, login.text
        inspected = podman("inspect", container, "--format", "{{.HostConfig.ReadonlyRootfs}} {{.Config.User}}").stdout
        assert inspected.split() == ["true", f"{UID}:{UID}"], inspected
        assert podman("exec", container, "python", "-c", "import os; print(os.getuid())").stdout.strip() == str(UID)
    finally:
        podman("kube", "down", str(manifest), check=False, timeout=120)


def _wait_ready(url: str, podman: Callable[..., subprocess.CompletedProcess[str]], container: str) -> Obj:
    deadline = time.monotonic() + 90
    last = "no answer"
    while time.monotonic() < deadline:
        try:
            response = httpx.get(url, timeout=3)
            if response.status_code == 200:
                body: Obj = response.json()
                return body
            last = response.text
        except httpx.TransportError as error:
            last = repr(error)
        state = podman("inspect", "--format", "{{.State.Status}}", container, check=False).stdout.strip()
        if state not in {"running", "created"}:
            break  # exited: the logs say why
        time.sleep(0.5)
    logs = podman("logs", container, check=False)
    raise AssertionError(f"{url} never became ready: {last}\n{logs.stdout}{logs.stderr}")
