""".env.example is the settings reference users copy: it must name every variable the
settings class reads, and nothing the class does not read."""

from __future__ import annotations

import re
from pathlib import Path

from tests.deploy.k8s_checks import settings_env_names

ENV_EXAMPLE = Path(__file__).resolve().parents[2] / ".env.example"
# "USER_SERVICE_X=value" or commented out: "# USER_SERVICE_X=value".
ASSIGNMENT = re.compile(r"^#?\s*(USER_SERVICE_[A-Z0-9_]+)=", re.MULTILINE)
# Read by operator commands (app/cli.py), not by the settings class.
COMMAND_VARIABLES = {"USER_SERVICE_ADMIN_PASSWORD", "USER_SERVICE_SEED_PASSWORD"}


def listed() -> set[str]:
    return set(ASSIGNMENT.findall(ENV_EXAMPLE.read_text()))


def test_every_setting_is_listed() -> None:
    assert sorted(settings_env_names() - listed()) == []


def test_nothing_listed_is_unknown_to_the_service() -> None:
    assert sorted(listed() - settings_env_names() - COMMAND_VARIABLES) == []
