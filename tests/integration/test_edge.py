"""The service's edge through real HTTP: per-address rate limits (memory and Redis),
client addresses believed only from trusted proxies, security headers and CORS."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from pydantic import SecretStr

from app.main import create_app
from app.settings import Settings
from testkit.live_server import serve
from tests.conftest import make_settings
from tests.integration.helpers import AUTH, ME, Client, bearer, login, register, unique_name

LIMITS = {"enabled": True, "login": "3/minute", "registration": "2/minute", "refresh": "3/minute"}
RATE_LIMITED_TYPE = "too-many-requests"


def edge_settings(settings: Settings, *, http: dict[str, Any] | None = None, **rate_limits: Any) -> Settings:
    assert settings.tokens.signing_key_file is not None
    return make_settings(
        settings.db.url,
        settings.tokens.signing_key_file,
        rate_limits={**LIMITS, **rate_limits},
        http=http or {},
        # Wrong passwords below are about addresses, not accounts.
        login_throttle={"enabled": False},
    )


@pytest.fixture
async def limited(settings: Settings) -> AsyncIterator[Client]:
    async with serve(create_app(edge_settings(settings))) as client:
        yield client


def _is_rate_limited(response: Any) -> bool:
    return response.status_code == 429 and str(response.json()["type"]).endswith(RATE_LIMITED_TYPE)


async def test_login_is_limited_per_address_with_retry_after(limited: Client) -> None:
    name = unique_name()
    await register(limited, name)
    answers = [await login(limited, name, "wrong-password-1") for _ in range(3)]
    assert [r.status_code for r in answers] == [401, 401, 401]
    assert answers[0].headers["RateLimit-Limit"] == "3"

    refused = await login(limited, name)
    assert _is_rate_limited(refused)
    assert refused.headers["content-type"].startswith("application/problem+json")
    assert 0 < int(refused.headers["Retry-After"]) <= 60
    assert "access_token" not in refused.text


async def test_each_route_has_its_own_budget(limited: Client) -> None:
    """Registrations do not use up logins, and authenticated reads are not limited."""
    first, second = unique_name(), unique_name()
    assert (await register(limited, first)).status_code == 201
    assert (await register(limited, second)).status_code == 201
    assert _is_rate_limited(await register(limited))

    tokens = (await login(limited, first)).json()
    for _ in range(10):
        assert (await limited.get(ME, headers=bearer(tokens))).status_code == 200


async def test_refusals_are_counted_by_route(limited: Client) -> None:
    for _ in range(5):
        await limited.post(f"{AUTH}/refresh", json={"refresh_token": "x" * 43})
    metrics = (await limited.get("/metrics")).text
    assert 'user_service_rate_limited_total{route="refresh"} 2.0' in metrics
    assert 'user_service_rate_limited_total{route="login"} 0.0' in metrics


async def test_forwarded_for_is_ignored_unless_the_peer_is_a_trusted_proxy(settings: Settings) -> None:
    async with serve(create_app(edge_settings(settings))) as client:
        # A client rotating X-Forwarded-For does not escape its limit: nobody is trusted.
        answers = [
            await client.post(
                f"{AUTH}/login",
                json={"username": "someone", "password": "wrong-password-1"},
                headers={"X-Forwarded-For": f"198.51.100.{i}"},
            )
            for i in range(4)
        ]
        assert [a.status_code for a in answers][:3] == [401, 401, 401]
        assert _is_rate_limited(answers[3])


async def test_behind_a_trusted_proxy_each_forwarded_client_has_its_own_limit(settings: Settings) -> None:
    trusted = edge_settings(settings, http={"trusted_proxies": ["127.0.0.1", "::1"]})
    async with serve(create_app(trusted)) as client:

        async def attempt(address: str) -> Any:
            return await client.post(
                f"{AUTH}/login",
                json={"username": "someone", "password": "wrong-password-1"},
                headers={"X-Forwarded-For": address},
            )

        for _ in range(3):
            assert (await attempt("203.0.113.7")).status_code == 401
        assert _is_rate_limited(await attempt("203.0.113.7"))
        # Another client behind the same proxy is unaffected...
        assert (await attempt("203.0.113.8")).status_code == 401
        # ...and a client cannot pick its address by prepending to the header: the proxy
        # appends the real peer, and the rightmost untrusted entry is the client.
        assert _is_rate_limited(await attempt("198.51.100.1, 203.0.113.7"))


async def test_ipv6_clients_are_counted_per_64_network(settings: Settings) -> None:
    """One IPv6 subscriber owns a /64: rotating addresses inside it shares one budget
    (finding 8c of #12), while the next /64 is another client."""
    trusted = edge_settings(settings, http={"trusted_proxies": ["127.0.0.1", "::1"]})
    async with serve(create_app(trusted)) as client:

        async def login_from(address: str) -> Any:
            body = {"username": unique_name(), "password": "wrong-password-1"}
            return await client.post(f"{AUTH}/login", json=body, headers={"X-Forwarded-For": address})

        same_network = [await login_from(f"2001:db8:0:7::{i:x}") for i in range(1, 5)]
        assert [r.status_code for r in same_network[:3]] == [401, 401, 401]
        assert _is_rate_limited(same_network[3])
        assert (await login_from("2001:db8:0:8::1")).status_code == 401
        # An IPv4 client written as IPv4-mapped IPv6 is that IPv4 client, not a /64.
        mapped = [await login_from("::ffff:192.0.2.9") for _ in range(3)]
        assert [r.status_code for r in mapped] == [401, 401, 401]
        assert _is_rate_limited(await login_from("192.0.2.9"))


async def test_with_redis_the_limit_is_shared_by_every_replica(settings: Settings, redis_url: str) -> None:
    shared = edge_settings(settings).model_copy(update={"redis_url": SecretStr(redis_url)})
    async with serve(create_app(shared)) as first, serve(create_app(shared)) as second:
        body = {"username": "someone", "password": "wrong-password-1"}
        for replica in (first, second, first):
            assert (await replica.post(f"{AUTH}/login", json=body)).status_code == 401
        assert _is_rate_limited(await second.post(f"{AUTH}/login", json=body))


async def test_limits_can_be_turned_off(settings: Settings) -> None:
    async with serve(create_app(edge_settings(settings, enabled=False))) as client:
        statuses = {(await login(client, "someone", "wrong-password-1")).status_code for _ in range(6)}
        assert statuses == {401}


# --- security headers and CORS -------------------------------------------------------------


async def test_every_response_carries_the_security_headers(client: Client) -> None:
    responses = [
        await client.get("/health/live"),
        await client.get("/nowhere"),  # 404 from the router
        await client.post(f"{AUTH}/login", content=b"{not json"),  # 400 from the decoder
        await client.get(ME),  # 401 from the auth middleware
    ]
    for response in responses:
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        assert response.headers["X-Frame-Options"] == "DENY"
        assert "frame-ancestors 'none'" in response.headers["Content-Security-Policy"]
        assert response.headers["Referrer-Policy"] == "no-referrer"
        # Plain HTTP: HSTS would be meaningless (and is ignored by browsers) here.
        assert "Strict-Transport-Security" not in response.headers


async def test_token_responses_are_never_stored(client: Client) -> None:
    name = unique_name()
    await register(client, name)
    tokens = await login(client, name)
    assert tokens.headers["Cache-Control"] == "no-store"
    assert (await client.get(ME, headers=bearer(tokens.json()))).headers["Cache-Control"] == "no-store"
    # The JWKS is public and meant to be cached.
    assert "max-age=300" in (await client.get("/.well-known/jwks.json")).headers["Cache-Control"]


async def test_hsts_is_sent_when_a_trusted_proxy_says_the_request_was_https(settings: Settings) -> None:
    trusted = edge_settings(settings, http={"trusted_proxies": ["127.0.0.1"]})
    async with serve(create_app(trusted)) as client:
        over_tls = await client.get("/health/live", headers={"X-Forwarded-Proto": "https"})
        assert over_tls.headers["Strict-Transport-Security"].startswith("max-age=31536000")
    async with serve(create_app(edge_settings(settings))) as untrusting:
        spoofed = await untrusting.get("/health/live", headers={"X-Forwarded-Proto": "https"})
        assert "Strict-Transport-Security" not in spoofed.headers


async def test_cors_allows_only_the_configured_origins(settings: Settings) -> None:
    origins = {"cors_allow_origins": ["https://app.example.com"], "cors_allow_credentials": True}
    async with serve(create_app(edge_settings(settings, http=origins))) as client:
        preflight = {"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "content-type"}
        allowed = await client.options(f"{AUTH}/login", headers={"Origin": "https://app.example.com", **preflight})
        assert allowed.status_code in (200, 204)
        assert allowed.headers["Access-Control-Allow-Origin"] == "https://app.example.com"
        assert allowed.headers["Access-Control-Allow-Credentials"] == "true"

        # A script's HEAD with a token needs a preflight too: allowed like the GET.
        head = {"Access-Control-Request-Method": "HEAD", "Access-Control-Request-Headers": "authorization"}
        allowed = await client.options(ME, headers={"Origin": "https://app.example.com", **head})
        assert allowed.status_code in (200, 204), allowed.text

        other = await client.get("/health/live", headers={"Origin": "https://evil.example.net"})
        assert "Access-Control-Allow-Origin" not in other.headers


async def test_without_configured_origins_there_are_no_cors_headers(client: Client) -> None:
    response = await client.get("/health/live", headers={"Origin": "https://app.example.com"})
    assert "Access-Control-Allow-Origin" not in response.headers


# --- limits on the work one request can cause ----------------------------------------------


async def test_oversized_headers_get_431_and_reach_no_handler(client: Client) -> None:
    response = await client.get("/health/live", headers={"X-Padding": "a" * 20_000})
    assert response.status_code == 431
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["type"].endswith("headers-too-large")
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    # Like every answer: the request id (echoed when sane) and the API's policy (finding 8a
    # of #12: the 431 used to carry neither).
    assert response.headers["Content-Security-Policy"] == "default-src 'none'; frame-ancestors 'none'"
    assert response.headers["X-Request-ID"]
    echoed = await client.get("/health/live", headers={"X-Padding": "a" * 20_000, "X-Request-ID": "trace-431"})
    assert echoed.headers["X-Request-ID"] == "trace-431"
    # Ordinary requests, bearer tokens included, are far below the limit.
    assert (await client.get("/health/live", headers={"X-Padding": "a" * 4_000})).status_code == 200


@pytest.mark.parametrize("depth", [17, 5_000, 30_000])
async def test_deeply_nested_json_is_a_400_not_a_500(client: Client, depth: int) -> None:
    """30,000 levels fit in the 64 KiB body limit and used to exhaust msgspec's recursion."""
    nested = "[" * depth + "]" * depth
    for body in (f'{{"username": {nested}, "password": "x"}}', f'{{"username": "a", "password": "b", "x": {nested}}}'):
        response = await client.post(
            f"{AUTH}/login", content=body.encode(), headers={"content-type": "application/json"}
        )
        assert response.status_code == 400, response.text
        assert response.json()["type"].endswith("malformed-request")


async def test_ordinary_nesting_is_still_decoded(client: Client) -> None:
    """The depth limit does not touch the service's own bodies (one level)."""
    name = unique_name()
    assert (await register(client, name)).status_code == 201
    assert (await login(client, name)).status_code == 200
