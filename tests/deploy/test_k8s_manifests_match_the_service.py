"""The rendered Kubernetes objects (k8s/) agree with the service's code: environment names,
settings, pod fit, probes, security, routes, policies, migration, autoscaling and every
reference. Every check is also shown failing on a deliberately broken copy (the
``*_rejects_*`` tests)."""

from __future__ import annotations

import copy
from collections.abc import Callable

import pytest

from tests.deploy import k8s_checks as checks
from tests.deploy.k8s_checks import Obj
from tests.deploy.k8s_rendered import RENDERINGS, SERVICE_RENDERINGS, database_cluster, first_rule, scrape_endpoint

CHECKS: dict[str, Callable[[list[Obj]], list[str]]] = {
    "environment names": checks.env_name_problems,
    "settings": checks.settings_problems,
    "pod fit": checks.pod_fit_problems,
    "probes": checks.probe_problems,
    "security": checks.security_problems,
    "service": checks.service_problems,
    "ingress": checks.ingress_problems,
    "outside probe": checks.outside_probe_problems,
    "network policy": checks.network_policy_problems,
    "mail": checks.mail_problems,
    "service monitor": checks.service_monitor_problems,
    "shared store": checks.shared_store_problems,
    "migration": checks.migration_problems,
    "autoscaling": checks.autoscaling_problems,
    "scheduling": checks.scheduling_problems,
    "backups": checks.backup_problems,
    "database network": checks.database_network_problems,
    "database identity": checks.database_identity_problems,
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
        for workload in [checks.server(rendered[name]), checks.migration_job(rendered[name])]:
            assert checks.pod_spec(workload)["securityContext"]["runAsUser"] == uid, (name, workload["kind"])


# Each breakage: the check that must catch it, the rendering it breaks, and how.
def _server_container(objs: list[Obj]) -> Obj:
    container: Obj = checks.pod_spec(checks.server(objs))["containers"][0]
    return container


def _configmap(objs: list[Obj]) -> dict[str, str]:
    (name,) = [s["configMapRef"]["name"] for s in _server_container(objs)["envFrom"] if "configMapRef" in s]
    data: dict[str, str] = checks.one(objs, "ConfigMap", name)["data"]
    return data


def _port(objs: list[Obj], name: str) -> Obj:
    (port,) = [p for p in _server_container(objs)["ports"] if p["name"] == name]
    found: Obj = port
    return found


def _env(objs: list[Obj], name: str) -> Obj:
    (entry,) = [e for e in _server_container(objs)["env"] if e["name"] == name]
    found: Obj = entry
    return found


def _set_value(entry: Obj, value: str) -> None:
    """An env entry that took its value from a Secret, given the value itself instead."""
    entry.pop("valueFrom")
    entry["value"] = value


def _rename_key(data: dict[str, str], old: str, new: str) -> None:
    data[new] = data.pop(old)


def _ingress_paths(objs: list[Obj]) -> list[Obj]:
    paths: list[Obj] = checks.one(objs, "Ingress", "user-service")["spec"]["rules"][0]["http"]["paths"]
    return paths


def _route(path: str, kind: str) -> Obj:
    backend = {"service": {"name": "user-service", "port": {"name": "proxied"}}}
    return {"path": path, "pathType": kind, "backend": backend}


def _policy(objs: list[Obj]) -> Obj:
    spec: Obj = checks.one(objs, "NetworkPolicy", "user-service")["spec"]
    return spec


def _egress_rule(objs: list[Obj], port: int) -> Obj:
    (rule,) = [r for r in _policy(objs)["egress"] if port in {p.get("port") for p in r.get("ports", [])}]
    found: Obj = rule
    return found


def _pod(objs: list[Obj], kind: str = "Deployment", name: str = "user-service") -> Obj:
    return checks.pod_spec(checks.one(objs, kind, name))


def _redis(objs: list[Obj]) -> Obj:
    return checks.one(objs, "Deployment", checks.SHARED_STORE)


def _redis_container(objs: list[Obj]) -> Obj:
    spec: Obj = checks.pod_spec(_redis(objs))["containers"][0]
    return spec


def _redis_policy(objs: list[Obj]) -> Obj:
    spec: Obj = checks.one(objs, "NetworkPolicy", checks.SHARED_STORE)["spec"]
    return spec


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
    "metrics on the service port": (
        "settings",
        "overlays/prod",
        lambda objs: _configmap(objs).pop("USER_SERVICE_METRICS__PORT"),
    ),
    "metrics listener on loopback": (
        "settings",
        "overlays/dev",
        lambda objs: _configmap(objs).update(USER_SERVICE_METRICS__HOST="127.0.0.1"),
    ),
    "a probe under another job": (
        "outside probe",
        "overlays/prod",
        lambda objs: checks.one(objs, "Probe", "user-service")["spec"].update(jobName="probe/user-service"),
    ),
    "a probe of a host nobody routes": (
        "outside probe",
        "overlays/prod",
        lambda objs: checks.one(objs, "Probe", "user-service")["spec"]["targets"]["staticConfig"].update(
            static=["https://users.example.org/.well-known/jwks.json"]
        ),
    ),
    "a probe of a path the edge does not route": (
        "outside probe",
        "overlays/prod",
        lambda objs: checks.one(objs, "Probe", "user-service")["spec"]["targets"]["staticConfig"].update(
            static=["https://users.example.com/health/ready"]
        ),
    ),
    "no port of the proxy's own": (
        "settings",
        "overlays/prod",
        lambda objs: _configmap(objs).pop("USER_SERVICE_SERVER__PROXY_PORT"),
    ),
    "the proxy's container port not the listener's": (
        "settings",
        "overlays/prod",
        lambda objs: _port(objs, "proxied").update(containerPort=8002),
    ),
    "the Ingress to the callers' port": (
        "ingress",
        "overlays/prod",
        lambda objs: _ingress_paths(objs)[0]["backend"]["service"].update(port={"name": "http"}),
    ),
    "the ingress controller on the callers' port": (
        "network policy",
        "overlays/prod",
        lambda objs: checks.one(objs, "NetworkPolicy", "user-service")["spec"]["ingress"][0].update(
            ports=[{"port": "http", "protocol": "TCP"}]
        ),
    ),
    "metrics container port not the listener's": (
        "settings",
        "overlays/prod",
        lambda objs: _port(objs, "metrics").update(containerPort=9100),
    ),
    "no shared store": (
        "settings",
        "overlays/prod",
        lambda objs: _server_container(objs)["env"].remove(_env(objs, "USER_SERVICE_REDIS_URL")),
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
        lambda objs: checks.pod_spec(checks.migration_job(objs))["securityContext"].update(runAsUser=0),
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
    "metrics port on the routed Service": (
        "service",
        "overlays/prod",
        lambda objs: checks.one(objs, "Service", "user-service")["spec"]["ports"].append(
            {"name": "metrics", "port": 9090, "targetPort": "metrics"}
        ),
    ),
    "no seccomp for Redis": (
        "security",
        "overlays/prod",
        lambda objs: checks.pod_spec(_redis(objs))["securityContext"].pop("seccompProfile"),
    ),
    "Redis with a writable root": (
        "security",
        "base",
        lambda objs: _redis_container(objs)["securityContext"].update(readOnlyRootFilesystem=False),
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
    "the ingress controller on the metrics port": (
        "network policy",
        "overlays/prod",
        lambda objs: _policy(objs)["ingress"][0]["ports"].append({"port": "metrics", "protocol": "TCP"}),
    ),
    "Prometheus on the service port": (
        "network policy",
        "overlays/dev",
        lambda objs: _policy(objs)["ingress"][1]["ports"].append({"port": "http", "protocol": "TCP"}),
    ),
    "egress unrestricted": (
        "network policy",
        "overlays/dev",
        lambda objs: _policy(objs)["policyTypes"].remove("Egress"),
    ),
    # The SMTP relay's rule gone: nothing fails but the mail, which waits in the outbox.
    "no egress to the SMTP relay": (
        "network policy",
        "overlays/prod",
        lambda objs: _policy(objs)["egress"].remove(_egress_rule(objs, 587)),
    ),
    "relay on a port the policy does not open": (
        "network policy",
        "overlays/prod",
        lambda objs: _configmap(objs).update(USER_SERVICE_MAIL__SMTP_PORT="2525"),
    ),
    "egress to port 25 (mail servers at large)": (
        "network policy",
        "base",
        lambda objs: _egress_rule(objs, 465)["ports"].append({"port": 25, "protocol": "TCP"}),
    ),
    "no egress to the dev mail catcher": (
        "network policy",
        "overlays/dev",
        lambda objs: _policy(objs)["egress"].remove(_egress_rule(objs, 1025)),
    ),
    "job label not user-service": (
        "service monitor",
        "overlays/prod",
        lambda objs: checks.one(objs, "ServiceMonitor", "user-service")["spec"].update(
            jobLabel="app.kubernetes.io/component"
        ),
    ),
    "scrape path not a route": (
        "service monitor",
        "overlays/prod",
        lambda objs: scrape_endpoint(objs).update(path="/stats"),
    ),
    "scraping the service port": (
        "service monitor",
        "overlays/prod",
        lambda objs: checks.one(objs, "Service", "user-service-metrics")["spec"]["ports"][0].update(targetPort="http"),
    ),
    "scraping both Services": (
        "service monitor",
        "base",
        lambda objs: checks.one(objs, "ServiceMonitor", "user-service")["spec"]["selector"]["matchLabels"].pop(
            "app.kubernetes.io/component"
        ),
    ),
    "Redis URL to a host that is not here": (
        "shared store",
        "overlays/prod",
        lambda objs: _env(objs, "USER_SERVICE_REDIS_URL").update(value="redis://:$(REDIS_PASSWORD)@redis:6379/0"),
    ),
    "Redis URL on the wrong port": (
        "shared store",
        "overlays/dev",
        lambda objs: _env(objs, "USER_SERVICE_REDIS_URL").update(
            value="redis://:$(REDIS_PASSWORD)@user-service-redis:6380/0"
        ),
    ),
    "Redis with persistence": (
        "shared store",
        "base",
        lambda objs: _redis_container(objs)["args"].__setitem__(
            _redis_container(objs)["args"].index("--appendonly") + 1, "yes"
        ),
    ),
    "two unreplicated Redis": ("shared store", "overlays/prod", lambda objs: _redis(objs)["spec"].update(replicas=2)),
    "Redis without probes": ("shared store", "overlays/dev", lambda objs: _redis_container(objs).pop("readinessProbe")),
    "Redis without a disruption budget": (
        "shared store",
        "overlays/prod",
        lambda objs: objs.remove(checks.one(objs, "PodDisruptionBudget", checks.SHARED_STORE)),
    ),
    "Redis without a password": (
        "shared store",
        "base",
        lambda objs: _redis_container(objs).update(args=["--port", "6379", "--appendonly", "no"]),
    ),
    "Redis password from another secret": (
        "shared store",
        "overlays/prod",
        lambda objs: _redis_container(objs)["env"][0]["valueFrom"]["secretKeyRef"].update(name="other"),
    ),
    "Redis open to the namespace": (
        "shared store",
        "overlays/prod",
        lambda objs: _redis_policy(objs)["ingress"][0]["from"][0]["podSelector"]["matchLabels"].pop(
            "app.kubernetes.io/component"
        ),
    ),
    "Redis open to another namespace": (
        "shared store",
        "overlays/dev",
        lambda objs: _redis_policy(objs)["ingress"][0]["from"][0].update(
            namespaceSelector={"matchLabels": {"kubernetes.io/metadata.name": "default"}}
        ),
    ),
    "Prometheus let into Redis itself": (
        "shared store",
        "overlays/prod",
        lambda objs: _redis_policy(objs)["ingress"][1]["ports"].append({"port": "redis", "protocol": "TCP"}),
    ),
    "the exporter's port open to the server": (
        "shared store",
        "overlays/dev",
        lambda objs: _redis_policy(objs)["ingress"][0]["ports"].append({"port": "metrics", "protocol": "TCP"}),
    ),
    "Redis calling out": (
        "shared store",
        "overlays/prod",
        lambda objs: _redis_policy(objs).update(egress=[{"ports": [{"port": 443}]}]),
    ),
    "server not let out to Redis": (
        "shared store",
        "overlays/prod",
        lambda objs: _policy(objs)["egress"].pop(2),
    ),
    "SMTP password no longer from its Secret": (
        "mail",
        "overlays/prod",
        lambda objs: _server_container(objs)["env"].remove(_env(objs, "USER_SERVICE_MAIL__SMTP_PASSWORD")),
    ),
    "SMTP username no longer from its Secret": (
        "mail",
        "base",
        lambda objs: _server_container(objs)["env"].remove(_env(objs, "USER_SERVICE_MAIL__SMTP_USERNAME")),
    ),
    "SMTP password written into the Deployment": (
        "mail",
        "overlays/prod",
        lambda objs: _set_value(_env(objs, "USER_SERVICE_MAIL__SMTP_PASSWORD"), "hunter2"),
    ),
    "SMTP password in the ConfigMap": (
        "mail",
        "overlays/dev",
        lambda objs: _configmap(objs).update(USER_SERVICE_MAIL__SMTP_PASSWORD="hunter2"),
    ),
    "SMTP credentials from two Secrets": (
        "mail",
        "overlays/prod",
        lambda objs: _env(objs, "USER_SERVICE_MAIL__SMTP_USERNAME")["valueFrom"]["secretKeyRef"].update(
            name="user-service-smtp-old"
        ),
    ),
    "no SMTP host (mail to the pod's disk)": (
        "mail",
        "overlays/prod",
        lambda objs: _configmap(objs).pop("USER_SERVICE_MAIL__SMTP_HOST"),
    ),
    "plain SMTP to a relay outside": (
        "mail",
        "overlays/dev",
        lambda objs: _configmap(objs).update(USER_SERVICE_MAIL__SMTP_HOST="smtp.example.com"),
    ),
    "links to a host the Ingress does not serve": (
        "mail",
        "overlays/dev",
        lambda objs: _configmap(objs).update(USER_SERVICE_MAIL__LINK_BASE_URL="https://users.example.com"),
    ),
    "links over plain HTTP": (
        "mail",
        "overlays/prod",
        lambda objs: _configmap(objs).update(USER_SERVICE_MAIL__LINK_BASE_URL="http://users.example.com"),
    ),
    "migration that fails on a rollback": (
        "migration",
        "overlays/prod",
        lambda objs: checks.pod_spec(checks.migration_job(objs))["containers"][0].update(
            command=["litestar", "--app", "app.main:create_app", "database", "upgrade", "--no-prompt"]
        ),
    ),
    "one migration Job name for every release": (
        "migration",
        "overlays/prod",
        lambda objs: checks.migration_job(objs)["metadata"].update(name="user-service-migrate"),
    ),
    "migration with another configuration": (
        "migration",
        "overlays/prod",
        # Its database's name gone: it would migrate whatever database the URL then names.
        lambda objs: checks.pod_spec(checks.migration_job(objs))["containers"][0]["env"].pop(2),
    ),
    "hard spread counting cordoned nodes": (
        "scheduling",
        "overlays/prod",
        lambda objs: [c.pop("nodeTaintsPolicy", None) for c in _pod(objs)["topologySpreadConstraints"]],
    ),
    "database instances sharing a zone": (
        "scheduling",
        "overlays/prod",
        lambda objs: database_cluster(objs)["spec"]["affinity"].update(podAntiAffinityType="preferred"),
    ),
    "pods past the pooler's client connections": (
        "autoscaling",
        "overlays/prod",
        lambda objs: checks.one(objs, "Pooler", "user-service-db-pooler")["spec"]["pgbouncer"]["parameters"].update(
            max_client_conn="100"
        ),
    ),
    "poolers past PostgreSQL's connections": (
        "autoscaling",
        "overlays/prod",
        lambda objs: checks.one(objs, "Pooler", "user-service-db-pooler")["spec"].update(instances=5),
    ),
    "a session-mode pooler for a service that pools transactions": (
        "autoscaling",
        "overlays/prod",
        lambda objs: checks.one(objs, "Pooler", "user-service-db-pooler")["spec"]["pgbouncer"].update(
            poolMode="session"
        ),
    ),
    "WAL not archived": (
        "backups",
        "overlays/prod",
        lambda objs: database_cluster(objs)["spec"].pop("plugins"),
    ),
    "base backups suspended": (
        "backups",
        "overlays/prod",
        lambda objs: checks.of_kind(objs, "ScheduledBackup")[0]["spec"].update(suspend=True),
    ),
    "archiving to a store that is not there": (
        "backups",
        "overlays/prod",
        lambda objs: checks.of_kind(objs, "ObjectStore")[0]["metadata"].update(name="elsewhere"),
    ),
    "the namespace deleted with the database": (
        "backups",
        "overlays/prod",
        lambda objs: objs.append({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "user-service"}}),
    ),
    "the database without its alerts": (
        "generated copies",
        "overlays/prod",
        lambda objs: objs.remove(checks.one(objs, "PrometheusRule", "user-service-database")),
    ),
    "no default deny": (
        "database network",
        "overlays/prod",
        lambda objs: objs.remove(checks.one(objs, "NetworkPolicy", "default-deny-ingress")),
    ),
    "the server straight to the database": (
        "database network",
        "overlays/prod",
        lambda objs: checks.one(objs, "NetworkPolicy", "user-service-db")["spec"]["ingress"][1]["from"].append(
            {"podSelector": {"matchLabels": {"app.kubernetes.io/name": "user-service"}}}
        ),
    ),
    "no default deny for egress": (
        "database network",
        "overlays/prod",
        lambda objs: objs.remove(checks.one(objs, "NetworkPolicy", "default-deny-egress")),
    ),
    "instances cut off from each other": (
        "database network",
        "overlays/prod",
        lambda objs: checks.one(objs, "NetworkPolicy", "user-service-db")["spec"]["egress"].pop(1),
    ),
    "a pooler that cannot reach the database": (
        "database network",
        "overlays/prod",
        lambda objs: checks.one(objs, "NetworkPolicy", "user-service-db-pooler")["spec"]["egress"][1]["to"][0][
            "podSelector"
        ]["matchLabels"].update({"cnpg.io/cluster": "another-db"}),
    ),
    "the server as the database owner": (
        "database identity",
        "overlays/prod",
        lambda objs: [
            entry["valueFrom"]["secretKeyRef"].update(name="user-service-db-app")
            for entry in checks.container(checks.server(objs))["env"]
            if entry["name"] in ("DB_USER", "DB_PASSWORD")
        ],
    ),
    "a runtime role that may create roles": (
        "database identity",
        "overlays/prod",
        lambda objs: database_cluster(objs)["spec"]["managed"]["roles"][0].update(createrole=True),
    ),
    "TLS without verifying the name": (
        "database identity",
        "overlays/prod",
        lambda objs: _configmap(objs).update(USER_SERVICE_DB__SSL_MODE="verify-ca"),
    ),
    "the CA from the wrong secret": (
        "database identity",
        "overlays/prod",
        lambda objs: [
            volume["secret"].update(secretName="user-service-db-server")
            for volume in checks.pod_spec(checks.migration_job(objs))["volumes"]
            if volume["name"] == "database-ca"
        ],
    ),
    "PostgreSQL egress to any address": (
        "database network",
        "overlays/prod",
        lambda objs: checks.one(objs, "NetworkPolicy", "user-service")["spec"]["egress"][1].pop("to"),
    ),
    "replicas fighting the autoscaler": (
        "autoscaling",
        "overlays/prod",
        lambda objs: checks.server(objs)["spec"].update(replicas=3),
    ),
    "more pods than PostgreSQL connections": (
        "autoscaling",
        "overlays/prod",
        lambda objs: database_cluster(objs)["spec"]["postgresql"]["parameters"].update(max_connections="100"),
    ),
    "rule edited in the PrometheusRule": (
        "generated copies",
        "overlays/prod",
        lambda objs: first_rule(objs).update(expr="vector(1)"),
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
    _env(objs, "DB_PORT")["valueFrom"]["secretKeyRef"]["key"] = "portnumber"  # not a key CloudNativePG writes
    assert checks.reference_problems(objs, checks.EXTERNAL_SECRETS["overlays/prod"])
    objs = copy.deepcopy(rendered["overlays/dev"])
    del checks.one(objs, "Secret", _env(objs, "USER_SERVICE_DB__URL")["valueFrom"]["secretKeyRef"]["name"])["metadata"][
        "namespace"
    ]
    assert checks.reference_problems(objs, checks.EXTERNAL_SECRETS["overlays/dev"])
