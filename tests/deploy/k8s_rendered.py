"""What the Kubernetes manifest tests (tests/deploy/test_k8s_*.py) share: the kustomizations
they render, and the objects that more than one of their breakage tables change."""

from __future__ import annotations

from tests.deploy import k8s_checks as checks
from tests.deploy.k8s_checks import Obj

RENDERINGS = ("base", "overlays/dev", "overlays/prod", "loadtest")
SERVICE_RENDERINGS = ("base", "overlays/dev", "overlays/prod")


def scrape_endpoint(objs: list[Obj]) -> Obj:
    endpoint: Obj = checks.one(objs, "ServiceMonitor", "user-service")["spec"]["endpoints"][0]
    return endpoint


def first_rule(objs: list[Obj]) -> Obj:
    rule: Obj = checks.one(objs, "PrometheusRule", "user-service")["spec"]["groups"][0]["rules"][0]
    return rule


def database_cluster(objs: list[Obj]) -> Obj:
    return checks.one(objs, "Cluster", "user-service-db")
