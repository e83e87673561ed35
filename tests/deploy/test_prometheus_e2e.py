"""A real Prometheus scrapes the real service and answers every dashboard and rule query.

The service runs on loopback with traffic that touches every series the dashboards and
rules read (registrations of each kind, logins of each result, a shed, refreshes with a
reuse, admin changes, 404s, probes). Prometheus (Debian's package) scrapes it every second
and evaluates the rules file every second. Then every expression of every dashboard panel
and every recording rule must return data: an empty panel is a bug to an SRE. Alert
expressions must parse (most are rightly empty), and no rule may fail to evaluate.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from app.main import create_app
from app.settings import Settings
from testkit.live_server import serve
from tests.conftest import make_settings
from tests.deploy.alert_stack import running_prometheus
from tests.deploy.artifacts import (
    CONTAINER_SERIES,
    PROBE_SERIES,
    RULES_FILES,
    dashboard_queries,
    load_rules,
    metric_names,
    reads_exporters,
    reads_locust,
    substitute_variables,
)
from tests.integration.helpers import AUTH, ME, USERS, Client, bearer, login, make_user, register, unique_name

pytestmark = pytest.mark.slow

# Seconds of 1 s scrapes: before the second round of traffic, a few samples of every
# series as it was; before querying, enough samples for every rate() to see the increases.
SCRAPES_BEFORE_TRAFFIC = 3
SCRAPES_BEFORE_QUERYING = 6


async def exercise_every_series(client: Client, db: AsyncEngine) -> None:
    """One of everything the dashboards and rules show."""
    admin = await make_user(client, db, role="admin")  # registration created, hash, login success
    user = await make_user(client, db)
    target = await make_user(client, db)

    assert (await register(client, user["username"])).status_code == 409  # registration conflict
    weak = await register(client, unique_name(), password="password123")
    assert weak.status_code == 422  # registration invalid (the service's password policy)
    assert (await login(client, user["username"], "not-the-password")).status_code == 401  # wrong_password
    assert (await login(client, unique_name("ghost"))).status_code == 401  # unknown_user

    spent = user["tokens"]["refresh_token"]
    assert (await client.post(f"{AUTH}/refresh", json={"refresh_token": spent})).status_code == 200  # rotated
    assert (await client.post(f"{AUTH}/refresh", json={"refresh_token": spent})).status_code == 401  # reused
    assert (await client.post(f"{AUTH}/refresh", json={"refresh_token": "never-issued"})).status_code == 401

    fresh = (await login(client, user["username"])).json()
    assert (await client.get(ME, headers=bearer(fresh))).status_code == 200
    assert (await client.get(ME)).status_code == 401
    new_password = "saffron-lantern-93-meadow"
    body = {"current_password": "violet-tangerine-47-harbor", "new_password": new_password}
    assert (await client.put(f"{ME}/password", headers=bearer(fresh), json=body)).status_code == 204

    staff = admin["headers"]
    assert (await client.get(USERS, headers=staff)).status_code == 200
    assert (await client.get(f"{USERS}/{target['id']}", headers=staff)).status_code == 200
    assert (await client.get(f"{USERS}/{uuid.uuid4()}", headers=staff)).status_code == 404
    assert (await client.get("/no/such/path")).status_code == 404  # route "unmatched"
    target_url = f"{USERS}/{target['id']}"
    assert (await client.patch(target_url, headers=staff, json={"role": "moderator"})).status_code == 200
    assert (await client.patch(target_url, headers=staff, json={"is_active": False})).status_code == 200
    assert (await login(client, target["username"])).status_code == 401  # inactive_user
    assert (await client.patch(target_url, headers=staff, json={"is_active": True})).status_code == 200
    assert (await client.delete(target_url, headers=staff)).status_code == 204
    assert (await login(client, target["username"])).status_code == 401  # deleted_user
    assert (await client.get("/health/ready")).status_code == 200
    assert (await client.get("/health/live")).status_code == 200

    # A stampede on a one-worker pool with no queue: some logins are shed with 503, which
    # creates the rejection and 5xx series.
    for _ in range(5):
        responses = await asyncio.gather(*(login(client, admin["username"]) for _ in range(6)))
        if any(r.status_code == 503 for r in responses):
            break
    else:
        pytest.fail("no login was shed; the rejection series stay untested")


async def trickle(client: Client, username: str, turn: asyncio.Lock) -> None:
    """Keep traffic flowing while Prometheus scrapes, so every rate has a recent increase.
    ``turn`` pauses it while a round of exercise_every_series runs (the pool has one worker
    and no queue: a concurrent login would be shed)."""
    while True:
        async with turn:
            tokens = (await login(client, username)).json()
            await client.get(ME, headers=bearer(tokens))
            await client.get("/health/ready")
            await client.get("/no/such/path")
        await asyncio.sleep(0.2)


async def wait_for_scrapes(api: httpx.AsyncClient, log_file: Path) -> None:
    """Until the service's target is up, then a few more scrapes."""
    deadline = time.monotonic() + 60
    state = "Prometheus not answering"
    while True:
        with contextlib.suppress(httpx.HTTPError):
            response = await api.get("/api/v1/targets")  # 503 until Prometheus is ready
            if response.status_code == 200:
                targets = response.json()["data"]["activeTargets"]
                if targets and all(t["health"] == "up" for t in targets):
                    break
                state = json.dumps(targets)
        if time.monotonic() > deadline:
            pytest.fail(f"the service's target never came up: {state}\n{log_tail(log_file)}")
        await asyncio.sleep(0.25)
    await asyncio.sleep(SCRAPES_BEFORE_TRAFFIC)


def log_tail(log_file: Path) -> str:
    return log_file.read_text(errors="replace")[-4000:] if log_file.exists() else ""


async def query(api: httpx.AsyncClient, expr: str) -> dict[str, Any]:
    response = await api.post("/api/v1/query", data={"query": expr})
    body: dict[str, Any] = response.json()
    return body


async def test_every_dashboard_and_recording_rule_query_returns_data(
    settings: Settings, signing_key_file: Path, db_engine: AsyncEngine, tmp_path: Path
) -> None:
    # Costly enough hashes on one worker with no queue, so that a burst of logins is shed.
    shedding = make_settings(
        str(settings.db.url),
        signing_key_file,
        passwords={"time_cost": 3, "memory_cost_kib": 32_768, "pool_size": 1, "queue_size": 0},
    )
    async with serve(create_app(shedding)) as client:
        # Once before Prometheus starts, so that every labelled series exists at the first
        # scrape (a series' first sample is invisible to rate()), and once while it scrapes,
        # so that every rate sees increases.
        await exercise_every_series(client, db_engine)
        steady = await make_user(client, db_engine)
        target = f"{client.base_url.host}:{client.base_url.port}"
        turn = asyncio.Lock()
        background = asyncio.create_task(trickle(client, steady["username"], turn))
        try:
            async with (
                running_prometheus(tmp_path, {"user-service": target}, RULES_FILES) as prometheus,
                httpx.AsyncClient(base_url=prometheus, timeout=30) as api,
            ):
                await wait_for_scrapes(api, tmp_path / "prometheus.log")
                async with turn:
                    await exercise_every_series(client, db_engine)
                await asyncio.sleep(SCRAPES_BEFORE_QUERYING)
                failures = await check_every_expression(api)
                failures += await check_sheds_count_as_unavailability(api)
                if failures:
                    failures.append(f"Prometheus log:\n{log_tail(tmp_path / 'prometheus.log')}")
        finally:
            background.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await background
    assert not failures, "\n\n".join(failures)


async def check_sheds_count_as_unavailability(api: httpx.AsyncClient) -> list[str]:
    """Not just data but the right data: the 503 sheds of the second round are counted by
    the rejection panel and, through Prometheus's own rule evaluation, by the SLI."""
    expectations = {
        'sum(rate(user_service_password_hash_rejections_total{job="user-service"}[1m]))': "sheds per second",
        'job:user_service_availability_errors:rate5m{job="user-service"}': "API 5xx per second (recorded)",
        'job:user_service_availability_errors:ratio_rate5m{job="user-service"}': "availability SLI (recorded)",
    }
    failures: list[str] = []
    for expr, meaning in expectations.items():
        result = (await query(api, expr))["data"]["result"]
        if not result or float(result[0]["value"][1]) <= 0:
            failures.append(f"{meaning} should be above 0 after the shed logins: {result}\n{expr}")
    return failures


async def check_every_expression(api: httpx.AsyncClient) -> list[str]:
    failures: list[str] = []
    rules = load_rules()
    # Not here: Locust's and the exporters' series (their own tests), the blackbox probe's
    # (test_alerts_on_real_faults.py, beside a real exporter) and cAdvisor's (Kubernetes only).
    must_have_data = [
        (f"{q.dashboard} / {q.panel}", substitute_variables(q.expr))
        for q in dashboard_queries()
        if not reads_locust(q)
        and not reads_exporters(q)
        and not metric_names(q.expr) & (PROBE_SERIES | CONTAINER_SERIES)
    ]
    must_have_data += [(f"recording rule {r.record}", r.expr) for r in rules if r.record]
    for where, expr in must_have_data:
        body = await query(api, expr)
        if body.get("status") != "success":
            failures.append(f"{where}: {body.get('error')}\n{expr}")
        elif not body["data"]["result"]:
            failures.append(f"{where}: no data\n{expr}")
    for rule in (r for r in rules if r.alert):
        body = await query(api, rule.expr)
        if body.get("status") != "success":
            failures.append(f"alert {rule.alert}: {body.get('error')}\n{rule.expr}")
    # Prometheus evaluated the rules file itself: every group ran, no rule failed.
    groups = (await api.get("/api/v1/rules")).json()["data"]["groups"]
    assert {g["name"] for g in groups} == {r.group for r in rules}
    failures.extend(
        f"rule {rule['name']} evaluates with health {rule['health']}: {rule.get('lastError')}"
        for group in groups
        for rule in group["rules"]
        if rule["health"] != "ok"
    )
    return failures
