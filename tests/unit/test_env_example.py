""".env.example is the settings reference users copy: it must name every variable the
settings class reads, and nothing the class does not read."""

from __future__ import annotations

import re
from pathlib import Path

from app.settings import Settings
from tests.deploy.k8s_checks import only_environment, settings_env_names

ENV_EXAMPLE = Path(__file__).resolve().parents[2] / ".env.example"
# "USER_SERVICE_X=value" or commented out: "# USER_SERVICE_X=value".
ASSIGNMENT = re.compile(r"^#?\s*(USER_SERVICE_[A-Z0-9_]+)=", re.MULTILINE)
# Read by operator commands (app/cli.py), not by the settings class.
COMMAND_VARIABLES = {"USER_SERVICE_ADMIN_PASSWORD", "USER_SERVICE_SEED_PASSWORD"}


def listed() -> set[str]:
    return set(ASSIGNMENT.findall(ENV_EXAMPLE.read_text()))


def set_values() -> set[str]:
    """The variables the file sets (not commented out)."""
    return set(re.findall(r"^(USER_SERVICE_[A-Z0-9_]+)=", ENV_EXAMPLE.read_text(), flags=re.MULTILINE))


def test_every_setting_is_listed() -> None:
    assert sorted(settings_env_names() - listed()) == []


def test_nothing_listed_is_unknown_to_the_service() -> None:
    assert sorted(listed() - settings_env_names() - COMMAND_VARIABLES) == []


def test_every_value_listed_is_the_default() -> None:
    """The file says it lists each setting "with its default": a value copied from it must
    not change what the service does (a retention, a port or a security mode mistyped
    here would be deployed by whoever copies the file). Commented-out lines are examples."""
    with only_environment({}):
        assert Settings(_env_file=ENV_EXAMPLE).model_dump() == Settings(_env_file=None).model_dump()


def test_every_mail_setting_is_listed_with_its_default() -> None:
    """The outbox's settings in particular (issue 13: .env.example lists every new setting),
    each set to its default unless it is one that has no useful default to show."""
    mail = {name for name in settings_env_names() if name.startswith("USER_SERVICE_MAIL__")}
    assert {"USER_SERVICE_MAIL__SMTP_HOST", "USER_SERVICE_MAIL__KEEP_SENT_SECONDS"} <= mail
    assert sorted(mail - listed()) == []
    # Unset by default, so shown commented out with an example value.
    examples_only = {
        f"USER_SERVICE_MAIL__{name}" for name in ("SMTP_HOST", "SMTP_USERNAME", "SMTP_PASSWORD", "SMTP_CA_FILE")
    }
    assert sorted(mail - examples_only - set_values()) == []
