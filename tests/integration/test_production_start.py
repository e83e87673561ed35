"""A production start with an abuse protection turned off starts (a deployment may do that
at its own edge) but says so, loudly and by name, in its log (issue 12, finding 5); so does
one without an SMTP host, whose mail would reach nobody (issue 13)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from testkit.server_process import ServerProcess

# The smallest argon2id pair OWASP lists; production refuses anything weaker.
OWASP_MINIMUM = {"USER_SERVICE_PASSWORDS__TIME_COST": "2", "USER_SERVICE_PASSWORDS__MEMORY_COST_KIB": "19456"}


def _records(output: str, event: str) -> list[dict[str, Any]]:
    records = []
    for line in output.splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and record.get("event") == event:
            records.append(record)
    return records


def _warnings(output: str) -> list[str]:
    return [str(record["setting"]) for record in _records(output, "abuse_protection_off")]


def test_production_names_every_protection_that_is_off(server_process: Callable[..., ServerProcess]) -> None:
    server = server_process(
        USER_SERVICE_ENVIRONMENT="production",
        USER_SERVICE_RATE_LIMITS__ENABLED="false",
        USER_SERVICE_LOGIN_THROTTLE__ENABLED="false",
        USER_SERVICE_HTTP__CORS_ALLOW_ORIGINS="*",
        **OWASP_MINIMUM,
    ).untraced()
    server.start()
    try:
        warned = _warnings(server.output)
    finally:
        server.stop()
    assert len(warned) == 3, server.output
    assert any(w.startswith("USER_SERVICE_RATE_LIMITS__ENABLED=false") for w in warned)
    assert any(w.startswith("USER_SERVICE_LOGIN_THROTTLE__ENABLED=false") for w in warned)
    assert any(w.startswith("USER_SERVICE_HTTP__CORS_ALLOW_ORIGINS=*") for w in warned)


def test_production_with_every_protection_on_warns_of_none(server_process: Callable[..., ServerProcess]) -> None:
    server = server_process(
        USER_SERVICE_ENVIRONMENT="production", USER_SERVICE_RATE_LIMITS__ENABLED="true", **OWASP_MINIMUM
    ).untraced()
    server.start()
    try:
        output = server.output
    finally:
        server.stop()
    assert "service_started" in output  # the log was read after start-up was logged
    assert _warnings(output) == []


@pytest.mark.parametrize("smtp_host", [None, "smtp.example.test"])
def test_production_without_an_smtp_host_says_once_that_mail_reaches_nobody(
    server_process: Callable[..., ServerProcess], smtp_host: str | None
) -> None:
    # With a host the worker would only connect once a mail waits; the outbox is empty.
    host = {"USER_SERVICE_MAIL__SMTP_HOST": smtp_host} if smtp_host else {}
    server = server_process(USER_SERVICE_ENVIRONMENT="production", **OWASP_MINIMUM, **host).untraced()
    server.start()
    try:
        output = server.output
    finally:
        server.stop()
    assert "service_started" in output  # the log was read after start-up was logged
    warned = _records(output, "mail_not_delivered")
    if smtp_host:
        assert warned == [], output
    else:
        assert len(warned) == 1, output
        assert warned[0]["level"] == "warning"
        assert warned[0]["setting"] == "USER_SERVICE_MAIL__SMTP_HOST"
