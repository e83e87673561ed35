"""Logs an SRE can trust: one access line per request, named security events, no secrets."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from app.main import create_app
from app.observability.logging import configure_logging
from app.settings import LogFormat, LoggingSettings, Settings
from testkit.live_server import LiveClient, serve
from tests.integration.helpers import AUTH, ME, PASSWORD, USERS, Client, bearer, login, make_user, register


class LogCapture:
    def __init__(self) -> None:
        self.stream = io.StringIO()

    @property
    def text(self) -> str:
        return self.stream.getvalue()

    def events(self, name: str | None = None) -> list[dict[str, Any]]:
        lines = [json.loads(line) for line in self.text.splitlines() if line.strip()]
        return [line for line in lines if name is None or line.get("event") == name]


@pytest.fixture
async def logged(settings: Settings, db_engine: AsyncEngine) -> AsyncIterator[tuple[LiveClient, LogCapture]]:
    capture = LogCapture()
    app = create_app(settings)
    # Same pipeline as production, written to a buffer instead of stdout, as JSON.
    configure_logging(LoggingSettings(level="DEBUG", format=LogFormat.JSON, sql_level="INFO"), stream=capture.stream)
    async with serve(app) as client:
        yield client, capture
    configure_logging(LoggingSettings(format=LogFormat.JSON))


async def test_no_password_or_token_reaches_the_logs(logged: tuple[Client, LogCapture], db_engine: AsyncEngine) -> None:
    client, capture = logged
    new_password = "copper-meadow-82-willow"
    await register(client, "secretive")
    tokens = (await login(client, "secretive")).json()
    refreshed = (await client.post(f"{AUTH}/refresh", json={"refresh_token": tokens["refresh_token"]})).json()
    await client.get(ME, headers={**bearer(refreshed), "Cookie": "session=cookie-secret-value"})
    body = {"current_password": PASSWORD, "new_password": new_password}
    await client.put(f"{ME}/password", headers=bearer(refreshed), json=body)
    await client.post(f"{AUTH}/refresh", json={"refresh_token": tokens["refresh_token"]})  # a reuse
    await login(client, "secretive", "a-wrong-password-here")
    await client.post(f"{AUTH}/logout", json={"refresh_token": refreshed["refresh_token"]})
    # Even a malformed body that echoes a password must not leak it.
    await client.post(
        f"{AUTH}/login",
        content=b'{"password": "' + PASSWORD.encode() + b'"',
        headers={"content-type": "application/json"},
    )
    # SQL statements are logged at INFO in this test: their bound parameters must not leak hashes either.
    async with db_engine.connect() as conn:
        stored_hash = (await conn.execute(text("SELECT password_hash FROM users"))).scalar_one()

    logs = capture.text
    assert capture.events("request"), "the capture must have seen the run"
    secrets = [PASSWORD, new_password, "a-wrong-password-here", "cookie-secret-value", stored_hash]
    secrets += [tokens["access_token"], tokens["refresh_token"], refreshed["access_token"], refreshed["refresh_token"]]
    for secret in secrets:
        assert secret not in logs
    # Not even a recognisable piece of a JWT.
    assert tokens["access_token"].split(".")[1] not in logs


async def test_one_access_line_per_request_with_route_ids_and_user(logged: tuple[Client, LogCapture]) -> None:
    client, capture = logged
    await register(client, "traced_user")
    tokens = (await login(client, "traced_user")).json()
    response = await client.get(
        ME, headers={**bearer(tokens), "X-Request-ID": "req-abc-123", "User-Agent": "acme-ios/4.2.0 " + "x" * 400}
    )
    user_id = response.json()["id"]
    await client.get(f"{USERS}/0190a000-0000-7000-8000-000000000000", headers=bearer(tokens))

    lines = capture.events("request")
    assert len(lines) == 4
    me_line = next(line for line in lines if line["request_id"] == "req-abc-123")
    assert me_line["http_method"] == "GET"
    assert me_line["http_route"] == "/api/v1/users/me"
    assert me_line["http_status"] == 200
    assert me_line["user_id"] == user_id
    assert me_line["duration_ms"] >= 0
    assert me_line["level"] == "info"
    assert me_line["timestamp"].endswith("Z")
    # "Which client version?": the address and the User-Agent, the latter cut at 256 characters.
    assert me_line["client_address"] == "127.0.0.1"
    assert me_line["user_agent"] == ("acme-ios/4.2.0 " + "x" * 400)[:256]
    forbidden = lines[-1]
    assert (forbidden["http_route"], forbidden["http_status"]) == ("/api/v1/users/{user_id}", 403)


async def test_security_events_have_stable_names(logged: tuple[Client, LogCapture], db_engine: AsyncEngine) -> None:
    client, capture = logged
    admin = await make_user(client, db_engine, role="admin")
    victim = await make_user(client, db_engine)
    await login(client, "no_such_person")
    await login(client, victim["username"], "not-the-password")
    await client.post(f"{AUTH}/refresh", json={"refresh_token": victim["tokens"]["refresh_token"]})
    await client.post(f"{AUTH}/refresh", json={"refresh_token": victim["tokens"]["refresh_token"]})
    await client.patch(f"{USERS}/{victim['id']}", headers=admin["headers"], json={"role": "moderator"})
    await client.delete(f"{USERS}/{victim['id']}", headers=admin["headers"])

    assert {e["reason"] for e in capture.events("login_failed")} == {"unknown_user", "wrong_password"}
    assert len(capture.events("login_succeeded")) == 2
    (reuse,) = capture.events("refresh_reuse_detected")
    assert reuse["user_id"] == victim["id"]
    assert reuse["level"] == "warning"
    (role,) = capture.events("role_changed")
    assert (role["actor_id"], role["user_id"], role["old_role"], role["new_role"]) == (
        admin["id"],
        victim["id"],
        "user",
        "moderator",
    )
    (deleted,) = capture.events("user_deleted")
    assert deleted["user_id"] == victim["id"]
    # Security events carry the request id of the request that caused them.
    assert all(e.get("request_id") for e in capture.events("login_failed"))


async def test_server_and_database_loggers_share_the_pipeline(logged: tuple[Client, LogCapture]) -> None:
    client, capture = logged
    await client.get("/health/ready")
    loggers = {line.get("logger") for line in capture.events()}
    assert "sqlalchemy.engine.Engine" in loggers  # SQL at INFO in this test, rendered as JSON too
    logging.getLogger("uvicorn.error").warning("probe from the test")
    assert capture.events("probe from the test")[0]["logger"] == "uvicorn.error"


def test_redaction_covers_nested_structures_and_free_text() -> None:
    from app.observability.logging import REDACTED, redact_secrets

    event = {
        "event": "Authorization: Bearer abc.def.ghi and password=hunter22 in text",
        "headers": [(b"authorization", b"Bearer xyz"), (b"cookie", b"a=b"), (b"accept", b"*/*")],
        "body": {"user": {"password": "hunter22", "name": "ok"}, "refresh_token": "r-123"},
        "api_key": "k",
    }
    out = redact_secrets(None, "info", event)
    assert "hunter22" not in json.dumps(out, default=str)
    assert "xyz" not in str(out["headers"])
    assert out["headers"][2] == (b"accept", b"*/*")
    assert out["body"]["user"] == {"password": REDACTED, "name": "ok"}
    assert out["body"]["refresh_token"] == REDACTED
    assert out["api_key"] == REDACTED


def test_log_format_and_level_come_from_settings(tmp_path: Path) -> None:
    buffer = io.StringIO()
    configure_logging(LoggingSettings(level="WARNING", format=LogFormat.CONSOLE), stream=buffer)
    logging.getLogger("user_service.test").info("hidden")
    logging.getLogger("user_service.test").warning("shown")
    configure_logging(LoggingSettings(format=LogFormat.JSON))
    assert "hidden" not in buffer.getvalue()
    assert "shown" in buffer.getvalue()
    assert not buffer.getvalue().lstrip().startswith("{")  # console, not JSON
