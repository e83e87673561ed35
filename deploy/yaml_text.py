"""YAML as the generated files write it: block scalars for multi-line strings (PromQL,
dashboard JSON, Python source), keys in the order given, so generated files read like
hand-written ones and diff line by line."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import yaml


class _Dumper(yaml.SafeDumper):
    pass


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def to_yaml(documents: Iterable[Mapping[str, Any]]) -> str:
    """Documents, each opened with ``---``."""
    return yaml.dump_all(
        list(documents), Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=1000, explicit_start=True
    )


def to_yaml_document(document: Mapping[str, Any]) -> str:
    """One document without the ``---`` line."""
    return yaml.dump(document, Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=1000)
