"""The Gateway API component (k8s/components/gateway-api): the prod overlay with it has an
HTTPRoute instead of the Ingress, valid against the Gateway API's CRD, with exactly the
Ingress's public paths, host and backend, and the NetworkPolicy admits the Gateway's
namespace instead of ingress-nginx's."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest

from tests.deploy import k8s_checks as checks
from tests.deploy.k8s_checks import Obj

# The Ingress pathType each Gateway API path match type is.
AS_INGRESS = {"PathPrefix": "Prefix", "Exact": "Exact"}


@pytest.fixture(scope="module")
def with_gateway(tmp_path_factory: pytest.TempPathFactory) -> list[Obj]:
    tree = checks.prepare_tree(tmp_path_factory.mktemp("gateway"))
    overlay = tree / "overlays" / "prod-gateway"
    overlay.mkdir()
    (overlay / "kustomization.yaml").write_text(
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n"
        "resources:\n  - ../prod\ncomponents:\n  - ../../components/gateway-api\n"
    )
    return checks.render(overlay)


def route(objs: list[Obj]) -> Obj:
    return checks.one(objs, "HTTPRoute", "user-service")


def test_the_route_replaces_the_ingress_path_for_path(with_gateway: list[Obj], rendered: dict[str, list[Obj]]) -> None:
    assert checks.of_kind(with_gateway, "Ingress") == []
    httproute = route(with_gateway)
    assert checks.custom_resource_problems(httproute) == []
    ingress = checks.one(rendered["overlays/prod"], "Ingress", "user-service")
    ingress_paths = {
        (path["pathType"], path["path"], path["backend"]["service"]["name"])
        for rule in ingress["spec"]["rules"]
        for path in rule["http"]["paths"]
    }
    route_paths = {
        (AS_INGRESS[match["path"]["type"]], match["path"]["value"], backend["name"])
        for rule in httproute["spec"]["rules"]
        for match in rule["matches"]
        for backend in rule["backendRefs"]
    }
    assert route_paths == ingress_paths
    assert httproute["spec"]["hostnames"] == [host for rule in ingress["spec"]["rules"] for host in [rule["host"]]]
    # The backend's port is the Service's proxied port (where the service believes the
    # Gateway's X-Forwarded-For), by number: the Gateway API has no port names.
    service_port = next(
        p["port"]
        for p in checks.one(with_gateway, "Service", "user-service")["spec"]["ports"]
        if p["name"] == "proxied"
    )
    assert {b["port"] for rule in httproute["spec"]["rules"] for b in rule["backendRefs"]} == {service_port}
    assert checks.httproute_problems(with_gateway) == []


def test_only_the_gateways_namespace_reaches_the_http_port(with_gateway: list[Obj]) -> None:
    assert checks.network_policy_problems(with_gateway, frozenset({"gateway-system", "monitoring"})) == []
    assert checks.network_policy_problems(with_gateway, frozenset({"ingress-nginx", "monitoring"}))


@pytest.mark.parametrize(
    ("breakage", "complaint"),
    [
        ({"type": "PathPrefix", "value": "/"}, "routes /metrics"),
        ({"type": "PathPrefix", "value": "/metrics"}, "routes /metrics"),
        ({"type": "PathPrefix", "value": "/nothing-here"}, "leads to no route"),
    ],
)
def test_the_route_check_rejects_a_route_to_what_is_not_public(
    with_gateway: list[Obj], breakage: dict[str, str], complaint: str
) -> None:
    objs = copy.deepcopy(with_gateway)
    route(objs)["spec"]["rules"][0]["matches"].append({"path": breakage})
    assert any(complaint in problem for problem in checks.httproute_problems(objs))


def test_the_route_check_rejects_a_backend_on_the_callers_port(with_gateway: list[Obj]) -> None:
    objs = copy.deepcopy(with_gateway)
    route(objs)["spec"]["rules"][0]["backendRefs"][0]["port"] = 80
    assert checks.httproute_problems(objs) == ["HTTPRoute backend port 80 is not the proxied one"]


def test_the_crd_check_rejects_a_misspelt_route(with_gateway: list[Obj]) -> None:
    objs = copy.deepcopy(with_gateway)
    route(objs)["spec"]["rules"][0]["backendRefs"][0]["portt"] = 80
    assert checks.custom_resource_problems(route(objs))


def test_the_component_is_documented(with_gateway: list[Obj]) -> None:
    docs = (Path(__file__).resolve().parents[2] / "docs" / "deploy-kubernetes.md").read_text()
    assert "components/gateway-api" in docs
