"""The Kubernetes manifests (k8s/), rendered with `kubectl kustomize` once per test module
that asks for them (tests/deploy/test_k8s_*.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.deploy import k8s_checks as checks
from tests.deploy.k8s_checks import Obj
from tests.deploy.k8s_rendered import RENDERINGS


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return checks.prepare_tree(tmp_path_factory.mktemp("manifests"))


@pytest.fixture(scope="module")
def rendered(tree: Path) -> dict[str, list[Obj]]:
    return {name: checks.render(tree / name) for name in RENDERINGS}
