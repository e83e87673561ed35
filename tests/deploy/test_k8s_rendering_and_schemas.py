"""The Kubernetes manifests (k8s/): every kustomization renders with `kubectl kustomize`, and
every object validates strictly (core kinds with kubernetes-validate, custom resources
against the CRDs in tests/data/crds). Every check is also shown failing on a deliberately
broken copy (the ``*_rejects_*`` tests)."""

from __future__ import annotations

import copy
import shutil
from collections.abc import Callable
from pathlib import Path

import kubernetes_validate  # type: ignore[import-untyped]
import pytest
import yaml

from deploy.grafana.dependencies import CNPG
from tests.deploy import k8s_checks as checks
from tests.deploy.k8s_checks import Obj
from tests.deploy.k8s_rendered import RENDERINGS, SERVICE_RENDERINGS, database_cluster, first_rule, scrape_endpoint

CUSTOM_GROUPS = ("monitoring.coreos.com", "postgresql.cnpg.io", "barmancloud.cnpg.io")


def _is_custom(obj: Obj) -> bool:
    return str(obj["apiVersion"]).split("/")[0] in CUSTOM_GROUPS


def test_every_kustomization_renders_what_it_should(rendered: dict[str, list[Obj]]) -> None:
    kinds = {name: {o["kind"] for o in objs} for name, objs in rendered.items()}
    base = {
        "ServiceAccount", "ConfigMap", "Deployment", "Service", "Ingress", "HorizontalPodAutoscaler",
        "PodDisruptionBudget", "NetworkPolicy", "Job", "ServiceMonitor", "PodMonitor", "PrometheusRule", "Probe",
    }  # fmt: skip
    assert base <= kinds["base"], base - kinds["base"]
    # The namespace is not in prod's kustomization: deleting the overlay must not delete it.
    assert kinds["overlays/prod"] == base | {"Cluster", "Pooler", "ObjectStore", "ScheduledBackup"}
    assert kinds["overlays/dev"] == (base - {"HorizontalPodAutoscaler"}) | {"Namespace", "Secret", "StatefulSet"}
    assert checks.one(rendered["overlays/prod"], "Cluster", "user-service-db")["spec"]["instances"] == 3
    assert checks.server(rendered["overlays/dev"])["spec"]["replicas"] == 1
    # Every service rendering carries the shared store and the metrics Service.
    for name in SERVICE_RENDERINGS:
        assert checks.one(rendered[name], "Deployment", checks.SHARED_STORE)
        assert checks.one(rendered[name], "Service", "user-service-metrics")
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
    assert {o["kind"] for o in customs} == {
        "ServiceMonitor",
        "PrometheusRule",
        "Probe",
        "Cluster",
        "PodMonitor",
        "Pooler",
        "ObjectStore",
        "ScheduledBackup",
    }
    problems = [f"{o['kind']}: {p}" for o in customs for p in checks.custom_resource_problems(o)]
    assert not problems, "\n".join(problems)


RESTORE_DRILL = checks.ROOT / "k8s" / "restore" / "cluster-from-backup.yaml"


def test_the_restore_drills_cluster_matches_its_crd_and_the_backups() -> None:
    """docs/restore-drill.md's manifest: a valid Cluster that recovers from the production
    cluster's archive (same store, same server name) and archives under a name of its own."""
    restored = yaml.safe_load(RESTORE_DRILL.read_text())
    assert checks.custom_resource_problems(restored) == []
    prod = yaml.safe_load_all((checks.ROOT / "k8s" / "overlays" / "prod" / "postgres-cluster.yaml").read_text())
    [production] = [o for o in prod if o["kind"] == "Cluster"]
    archive = production["spec"]["plugins"][0]["parameters"]["barmanObjectName"]
    [source] = restored["spec"]["externalClusters"]
    assert restored["spec"]["bootstrap"]["recovery"]["source"] == source["name"]
    assert source["plugin"]["parameters"] == {"barmanObjectName": archive, "serverName": production["metadata"]["name"]}
    own = restored["spec"]["plugins"][0]["parameters"]
    assert own["barmanObjectName"] == archive
    assert own["serverName"] not in {production["metadata"]["name"], None}
    assert restored["metadata"]["name"] != production["metadata"]["name"]


def pod_monitor(objs: list[Obj], name: str) -> Obj:
    return next(m for m in checks.of_kind(objs, "PodMonitor") if m["metadata"]["name"] == name)


CRD_BREAKAGES: dict[str, tuple[str, Callable[[list[Obj]], object]]] = {
    "misspelt endpoint field": ("ServiceMonitor", lambda objs: scrape_endpoint(objs).update(intervall="15s")),
    "rule without expr": ("PrometheusRule", lambda objs: first_rule(objs).pop("expr")),
    "misspelt rule field": ("PrometheusRule", lambda objs: first_rule(objs).update(labelz={})),
    "instances not a number": ("Cluster", lambda objs: database_cluster(objs)["spec"].update(instances="three")),
    "unknown Cluster field": ("Cluster", lambda objs: database_cluster(objs)["spec"].update(backups={})),
    "misspelt metadata": ("Cluster", lambda objs: database_cluster(objs)["metadata"].update(lables={})),
    "misspelt probe target list": (
        "Probe",
        lambda objs: checks.one(objs, "Probe", "user-service")["spec"]["targets"]["staticConfig"].update(statics=[]),
    ),
    "misspelt pod endpoint field": (
        "PodMonitor",
        lambda objs: pod_monitor(objs, "user-service-db")["spec"]["podMetricsEndpoints"][0].update(portt="metrics"),
    ),
}


def test_the_database_exporter_is_scraped_as_the_job_the_dashboard_reads(rendered: dict[str, list[Obj]]) -> None:
    """CloudNativePG labels each instance's pod with its cluster's name and serves the
    exporter on the port named `metrics`; the Dependencies dashboard selects CNPG's job."""
    objs = rendered["overlays/prod"]
    [cluster] = checks.of_kind(objs, "Cluster")
    monitor = pod_monitor(objs, cluster["metadata"]["name"])
    assert monitor["spec"]["selector"] == {"matchLabels": {"cnpg.io/cluster": cluster["metadata"]["name"]}}
    [endpoint] = monitor["spec"]["podMetricsEndpoints"]
    assert endpoint["port"] == "metrics"
    [relabel] = endpoint["relabelings"]
    assert (relabel["targetLabel"], f'job="{relabel["replacement"]}"') == ("job", CNPG)


@pytest.mark.parametrize("breakage", CRD_BREAKAGES)
def test_crd_check_rejects_a_broken_custom_resource(rendered: dict[str, list[Obj]], breakage: str) -> None:
    kind, breaks = CRD_BREAKAGES[breakage]
    objs = copy.deepcopy(rendered["overlays/prod"])
    breaks(objs)
    # The one object of that kind the breakage changed (the prod overlay has two PodMonitors).
    (broken,) = [o for o in checks.of_kind(objs, kind) if o not in checks.of_kind(rendered["overlays/prod"], kind)]
    assert checks.custom_resource_problems(broken)
