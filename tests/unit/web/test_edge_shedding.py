"""The edge shed (app/web/shedding.py) on plain ASGI: who passes, who is shed, and what a
shed answer carries."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from litestar.types import Receive, Scope, Send

from app.identity.passwords import PasswordHasher
from app.settings import PasswordSettings
from app.web.shedding import shedding_while_hashing_is_full

LOGIN = "/api/v1/auth/login"


class Downstream:
    """The rest of the service: holds each request until released."""

    def __init__(self) -> None:
        self.entered: list[str] = []
        self.release = asyncio.Event()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.entered.append(scope["path"])
        await self.release.wait()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"{}", "more_body": False})


async def call(app: Any, path: str, method: str = "POST") -> tuple[list[Any], dict[str, Any], float]:
    scope: dict[str, Any] = {"type": "http", "path": path, "method": method, "headers": []}
    sent: list[Any] = []

    async def receive() -> Any:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Any) -> None:
        sent.append(message)

    started = time.perf_counter()
    await app(scope, receive, send)
    return sent, scope, time.perf_counter() - started


async def test_beyond_the_pools_capacity_a_login_is_shed_before_the_service_sees_it() -> None:
    hasher = PasswordHasher(PasswordSettings(pool_size=1, queue_size=1, retry_after_seconds=2, shed_delay_seconds=0.2))
    rejected: list[str] = []
    hasher.rejection_observers.append(rejected.append)
    shed_routes: list[str] = []
    downstream = Downstream()
    app = shedding_while_hashing_is_full(
        downstream, hasher=hasher, routes={LOGIN: "verify"}, delay_seconds=0.2, on_shed=shed_routes.append
    )
    admitted = [asyncio.ensure_future(call(app, LOGIN)) for _ in range(2)]  # pool + queue
    await asyncio.sleep(0.01)
    assert downstream.entered == [LOGIN, LOGIN]

    sent, scope, seconds = await call(app, LOGIN)
    assert downstream.entered == [LOGIN, LOGIN]  # the third never reached the service
    assert sent[0]["status"] == 503
    headers = dict(sent[0]["headers"])
    assert headers[b"retry-after"] == b"2"
    assert headers[b"content-type"] == b"application/problem+json"
    body = json.loads(sent[1]["body"])
    assert body["type"].endswith("/hashing-capacity-exceeded")
    assert body["status"] == 503
    assert body["instance"] == LOGIN
    assert scope["path_template"] == LOGIN  # its own route series in the metrics
    assert seconds >= 0.2  # held before it went
    assert rejected == ["verify"]
    assert shed_routes == [LOGIN]

    # Other routes and methods pass whatever the load; and once an admitted login has
    # its answer, the next one is let in again.
    other = asyncio.ensure_future(call(app, "/api/v1/users/me"))
    get_login = asyncio.ensure_future(call(app, LOGIN, method="GET"))
    await asyncio.sleep(0.01)
    assert downstream.entered[2:] == ["/api/v1/users/me", LOGIN]
    downstream.release.set()
    await asyncio.gather(*admitted, other, get_login)
    sent, _, _ = await call(app, LOGIN)
    assert sent[0]["status"] == 200


async def test_a_pool_filled_by_other_routes_sheds_at_the_edge_too() -> None:
    """Password changes, resets and enrolments hash outside the edge's count: a full pool
    sheds the storm routes even with none of their own in flight."""
    hasher = PasswordHasher(PasswordSettings(pool_size=1, queue_size=0, time_cost=3, memory_cost_kib=32_768))
    await hasher.start()
    try:
        other_route = asyncio.ensure_future(hasher.hash("a password being changed"))
        await asyncio.sleep(0)
        assert hasher.full
        downstream = Downstream()
        app = shedding_while_hashing_is_full(downstream, hasher=hasher, routes={LOGIN: "verify"}, delay_seconds=0)
        sent, _, _ = await call(app, LOGIN)
        assert sent[0]["status"] == 503
        assert downstream.entered == []
        await other_route
    finally:
        hasher.shutdown()
