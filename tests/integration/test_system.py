"""Probes, JWKS, request ids, the OpenAPI document and problem details for HTTP-level errors."""

from __future__ import annotations

import asyncio
from pathlib import Path

from app.main import create_app
from app.settings import Settings
from testkit.live_server import serve
from tests.conftest import make_settings
from tests.integration.helpers import AUTH, ME, Client, assert_problem, bearer, login, register


async def test_probes_are_ok_on_a_healthy_service(client: Client) -> None:
    assert (await client.get("/health/live")).json() == {"status": "ok"}
    for _ in range(100):  # the schema check runs in the background right after start
        if (await client.get("/health/startup")).status_code == 200:
            break
        await asyncio.sleep(0.05)
    ready = await client.get("/health/ready")
    assert ready.status_code == 200
    assert ready.json()["checks"] == {"startup": "ok", "draining": "ok", "database": "ok"}


async def test_ready_and_startup_fail_and_say_why_when_the_database_is_unreachable(
    settings: Settings, signing_key_file: Path
) -> None:
    # A port nobody listens on: the database is "down" from the first moment.
    down = make_settings(
        "postgresql+asyncpg://postgres@127.0.0.1:9/none", signing_key_file, db={"pool_timeout_seconds": 1}
    )
    async with serve(create_app(down)) as client:
        assert (await client.get("/health/live")).status_code == 200
        ready = assert_problem(await client.get("/health/ready"), 503)
        assert ready["checks"]["database"].startswith("fail")
        startup = assert_problem(await client.get("/health/startup"), 503)
        assert "database" in startup["detail"]
        # And a request that needs the database gets a quick 503, not a 500 or a hang.
        response = await client.post(f"{AUTH}/login", json={"username": "someone", "password": "whatever-it-is"})
        assert_problem(response, 503)
        assert response.headers["retry-after"]


async def test_jwks_serves_the_public_signing_key_only(client: Client) -> None:
    response = await client.get("/.well-known/jwks.json")
    assert response.status_code == 200
    (key,) = response.json()["keys"]
    assert (key["kty"], key["crv"], key["alg"], key["use"]) == ("OKP", "Ed25519", "EdDSA", "sig")
    assert "d" not in key  # the private part never leaves the service


async def test_request_id_is_echoed_or_generated_on_every_response(client: Client) -> None:
    echoed = await client.get("/health/live", headers={"X-Request-ID": "trace-me-42"})
    assert echoed.headers["x-request-id"] == "trace-me-42"
    generated = await client.get("/health/live")
    assert len(generated.headers["x-request-id"]) >= 16
    assert generated.headers["x-request-id"] != (await client.get("/health/live")).headers["x-request-id"]
    # Insane ids (log injection, oversize) are replaced, and errors carry an id too.
    for insane in ["bad id with spaces", "x" * 500, "new\\nline"]:
        response = await client.get("/no/such/path", headers={"X-Request-ID": insane})
        assert response.status_code == 404
        assert response.headers["x-request-id"] not in {insane, ""}


async def test_http_level_errors_are_problem_details(client: Client) -> None:
    assert_problem(await client.get("/no/such/path"), 404)
    assert_problem(await client.get(f"{AUTH}/login"), 405)
    assert_problem(await client.get("/api/v1/users/not-a-uuid"), 404)


async def test_head_answers_as_get_without_content_and_is_measured_as_head(client: Client) -> None:
    # RFC 9110: HEAD is GET's status and headers without content. Uptime checks, link
    # checkers and load balancers send it to the probes and reads.
    assert (await register(client, "header")).status_code == 201
    auth = bearer((await login(client, "header")).json())
    for path, headers in (("/health/live", {}), ("/health/ready", {}), (ME, auth), ("/.well-known/jwks.json", {})):
        got = await client.get(path, headers=headers)
        head = await client.head(path, headers=headers)
        assert (head.status_code, head.content) == (got.status_code, b""), path
        assert head.headers["content-type"] == got.headers["content-type"], path
        assert head.headers["content-length"] == str(len(got.content)), path
        assert head.headers["x-request-id"], path
    # Refusals are the GET's too: no token, no such path, a route without GET.
    assert (await client.head(ME)).status_code == 401
    assert (await client.head("/no/such/path")).status_code == 404
    refused = await client.head(f"{AUTH}/login")
    assert (refused.status_code, refused.content) == (405, b"")
    assert "POST" in refused.headers["allow"]
    metrics = (await client.get("/metrics")).text
    head_of_me = [line for line in metrics.splitlines() if 'http_request_method="HEAD"' in line and ME in line]
    assert any('http_response_status_code="200"' in line for line in head_of_me), head_of_me


async def test_openapi_document_describes_the_contract(client: Client) -> None:
    document = (await client.get("/schema/openapi.json")).json()
    paths = document["paths"]
    for path in [
        "/api/v1/auth/register",
        "/api/v1/auth/login",
        "/api/v1/auth/refresh",
        "/api/v1/auth/logout",
        "/api/v1/users/me",
        "/api/v1/users/me/password",
        "/api/v1/users",
        "/api/v1/users/{user_id}",
        "/.well-known/jwks.json",
        "/health/ready",
    ]:
        assert path in paths, path
    assert document["components"]["securitySchemes"]["BearerToken"]["scheme"] == "bearer"
    assert (await client.get("/schema/swagger")).status_code == 200
