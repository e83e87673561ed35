"""Alerts proven on real faults: the service (``python -m app`` on PostgreSQL) is broken for
real while a real Prometheus evaluates every rule, time-scaled (tests/deploy/alert_stack.py:
an hour of production is a minute here), and a real Alertmanager runs the shipped routing.
Each test waits for the alert the runbook names to arrive at Alertmanager's API, then
repairs the fault and waits for it to resolve; one more runs normal load for as long and
expects nothing at all.

Times are printed (``-s``) and quoted in the note: at the time scale of 60, a second here
is a minute in production, except the time Prometheus needs to scrape and evaluate (1 s
each here, 15 s in production).

Run them alone: ``uv run pytest tests/deploy/test_alerts_on_real_faults.py -s``.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import httpx
import pytest

from testkit.server_process import SLOW_SINGLE_THREAD_HASHING, ServerProcess
from testkit.smtp_server import smtp_server
from tests.deploy.alert_stack import DEADMAN_PATH, TIME_SCALE, WATCHDOG, AlertStack, Notification, alert_stack
from tests.deploy.artifacts import dashboard_queries, substitute_variables
from tests.integration.faults import LOGIN, REGISTER, UNTHROTTLED, proxied_server, register_body
from tests.integration.helpers import PASSWORD

pytestmark = pytest.mark.slow

ME = "/api/v1/users/me"
# Seconds of traffic before a fault, so every rate has samples and nothing is pending.
WARM_UP = 8
# Upper bounds for an alert to arrive or resolve: generous, since the machine is shared;
# the measured times are printed.
ARRIVES_WITHIN = 60
RESOLVES_WITHIN = 90


def report(what: str, seconds: float, *, scaled: bool = True) -> None:
    """Print a measured time (shown with -s); ``scaled=False`` for Alertmanager's own
    timings (group_wait), which run at production speed here too."""
    production = f"about {seconds * TIME_SCALE / 60:.0f} min in production" if scaled else "the same in production"
    sys.stdout.write(f"\n[{what}] {seconds:.1f} s here, {production}\n")


class Traffic:
    """A steady client: GET /users/me about 20 times a second and a login every half second,
    counting the answers by status."""

    def __init__(self, client: httpx.AsyncClient, username: str) -> None:
        self.client = client
        self.username = username
        self.statuses: Counter[int] = Counter()
        self.token = ""

    async def _one(self, request: Callable[[], object]) -> None:
        try:
            response = await request()  # type: ignore[misc]
            self.statuses[response.status_code] += 1
        except httpx.HTTPError:
            self.statuses[0] += 1

    async def _login(self) -> httpx.Response:
        response = await self.client.post(LOGIN, json={"username": self.username, "password": PASSWORD})
        if response.status_code == 200:
            self.token = response.json()["access_token"]
        return response

    async def _me(self) -> httpx.Response:
        return await self.client.get(ME, headers={"Authorization": f"Bearer {self.token}"})

    async def run(self) -> None:
        tick = 0
        while True:
            if tick % 10 == 0:
                await self._one(self._login)
            await self._one(self._me)
            tick += 1
            await asyncio.sleep(0.05)


@contextlib.asynccontextmanager
async def traffic(base_url: str, username: str) -> AsyncIterator[Traffic]:
    async with httpx.AsyncClient(base_url=base_url, timeout=30) as client:
        assert (await client.post(REGISTER, json=register_body(username))).status_code == 201
        steady = Traffic(client, username)
        assert (await steady._login()).status_code == 200
        task = asyncio.create_task(steady.run())
        try:
            yield steady
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


def target_of(server: ServerProcess) -> str:
    return f"127.0.0.1:{server.port}"


async def quiet_start(stack: AlertStack) -> None:
    """Warm up, and fail early if anything fires before the fault."""
    await asyncio.sleep(WARM_UP)
    assert await stack.alerts() == [], await stack.summary()


async def test_a_database_cut_pages_for_availability_and_resolves_after_recovery(
    server_process: Callable[..., ServerProcess], clean_database: str, tmp_path: Path
) -> None:
    page = {"slo": "availability", "burn_rate": "14.4"}
    with proxied_server(server_process, clean_database, USER_SERVICE_DB__POOL_TIMEOUT_SECONDS="2", **UNTHROTTLED) as (
        server,
        proxy,
    ):
        async with alert_stack(tmp_path / "stack", target_of(server)) as stack, traffic(server.base_url, "steady") as t:
            await quiet_start(stack)
            proxy.cut()
            fired = await stack.wait_for("UserServiceAvailabilityBudgetBurn", ARRIVES_WITHIN, **page)
            report("database cut -> availability 14.4x page", fired)
            assert t.statuses[503] > 0
            proxy.restore()
            resolved = await stack.wait_until_gone("UserServiceAvailabilityBudgetBurn", RESOLVES_WITHIN, **page)
            report("database back -> 14.4x page resolved", resolved)


PROBE_PANEL = "Outside-in probes"


async def panel_values(stack: AlertStack, title: str) -> list[float]:
    """What the overview panel titled ``title`` shows now, one value per series."""
    (expr,) = [q.expr for q in dashboard_queries() if q.panel == title]
    async with httpx.AsyncClient(base_url=stack.prometheus_url, timeout=5) as api:
        body = (await api.post("/api/v1/query", data={"query": substitute_variables(expr)})).json()
    return [float(series["value"][1]) for series in body["data"]["result"]]


async def test_a_database_outage_nobody_calls_through_still_pages(
    server_process: Callable[..., ServerProcess], clean_database: str, tmp_path: Path
) -> None:
    """Issue 20's blind spot: the database goes away and no client request reaches the
    process (in Kubernetes the ingress stops sending any once readiness fails everywhere),
    so the availability SLI has no events and /metrics still answers. The probe from
    outside and the prober's own readiness requests page anyway, and the page reaches the
    pager; the SLO alert stays silent, as it must without events."""
    with proxied_server(server_process, clean_database, USER_SERVICE_DB__POOL_TIMEOUT_SECONDS="2", **UNTHROTTLED) as (
        server,
        proxy,
    ):
        async with alert_stack(tmp_path / "stack", target_of(server)) as stack:
            await quiet_start(stack)
            # The overview's probe panel (the alert's dashboard_url) shows the probes
            # succeeding, and then the outage. (Its minute-long average may still hold a
            # probe of the start, before the service was ready: hence no exact 1 before.)
            before = await panel_values(stack, PROBE_PANEL)
            assert len(before) == 1, before
            assert before[0] > 0, before
            proxy.cut()
            cut = time.monotonic()
            await stack.wait_for("UserServiceProbeFailing", ARRIVES_WITHIN, severity="critical")
            report("database cut, no traffic -> UserServiceProbeFailing page", time.monotonic() - cut)
            shown = await panel_values(stack, PROBE_PANEL)
            assert len(shown) == 1, shown
            assert shown[0] < 1, (before, shown)
            await stack.wait_for("UserServiceNotReady", ARRIVES_WITHIN, severity="critical")
            report("database cut, no traffic -> UserServiceNotReady page", time.monotonic() - cut)
            while not [n for n in stack.sink.received if n.path == "/pagerduty"]:
                assert time.monotonic() - cut < 2 * ARRIVES_WITHIN, f"no page sent: {stack.sink.received}"
                await asyncio.sleep(0.25)
            event = next(n for n in stack.sink.received if n.path == "/pagerduty")
            assert event.body["event_action"] == "trigger"
            assert await stack.matching("UserServiceAvailabilityBudgetBurn", {}) == []
            assert await stack.matching("UserServiceDown", {}) == []
            proxy.restore()
            resolved = await stack.wait_until_gone("UserServiceProbeFailing", RESOLVES_WITHIN)
            report("database back -> UserServiceProbeFailing resolved", resolved)
            resolved = await stack.wait_until_gone("UserServiceNotReady", RESOLVES_WITHIN)
            report("database back -> UserServiceNotReady resolved", resolved)


async def test_a_login_storm_past_capacity_sheds_and_opens_the_shedding_ticket(
    server_process: Callable[..., ServerProcess], tmp_path: Path
) -> None:
    one_slow_hasher = {**SLOW_SINGLE_THREAD_HASHING, "USER_SERVICE_PASSWORDS__QUEUE_SIZE": "2", **UNTHROTTLED}
    server = server_process(**one_slow_hasher).start()
    try:
        async with alert_stack(tmp_path / "stack", target_of(server)) as stack, traffic(server.base_url, "steady"):
            await quiet_start(stack)
            async with httpx.AsyncClient(base_url=server.base_url, timeout=30) as storm:
                body = {"username": "steady", "password": PASSWORD}
                statuses: Counter[int] = Counter()
                started = time.monotonic()
                fired_at: float | None = None
                while fired_at is None and time.monotonic() - started < ARRIVES_WITHIN:
                    answers = await asyncio.gather(*(storm.post(LOGIN, json=body) for _ in range(12)))
                    statuses.update(answer.status_code for answer in answers)
                    if await stack.matching("UserServiceHashingRejections", {}):
                        fired_at = time.monotonic()
            assert fired_at is not None, f"no shedding ticket; answers {statuses}; {await stack.summary()}"
            report("login storm past capacity -> UserServiceHashingRejections", fired_at - started)
            assert statuses[503] > 0
            assert set(statuses) <= {200, 503}
            resolved = await stack.wait_until_gone("UserServiceHashingRejections", RESOLVES_WITHIN)
            report("storm over -> shedding ticket resolved", resolved)
    finally:
        server.stop()


async def test_credential_stuffing_opens_the_abuse_ticket(
    server_process: Callable[..., ServerProcess], tmp_path: Path
) -> None:
    # The service's own protections stay on (the per-account throttle; the per-address limit
    # is off for every test client on 127.0.0.1): throttled guesses count as failures too.
    server = server_process().start()
    try:
        async with alert_stack(tmp_path / "stack", target_of(server)) as stack, traffic(server.base_url, "steady"):
            await quiet_start(stack)
            async with httpx.AsyncClient(base_url=server.base_url, timeout=30) as attacker:
                started = time.monotonic()
                fired_at: float | None = None
                guess = 0
                while fired_at is None and time.monotonic() - started < ARRIVES_WITHIN:
                    # 10 guesses a second over many names: well above the alert's 2 a second.
                    await asyncio.gather(
                        *(
                            attacker.post(LOGIN, json={"username": f"victim{(guess + i) % 40}", "password": "123456"})
                            for i in range(5)
                        )
                    )
                    guess += 5
                    await asyncio.sleep(0.5)
                    if await stack.matching("UserServiceCredentialStuffing", {}):
                        fired_at = time.monotonic()
            assert fired_at is not None, await stack.summary()
            report("credential stuffing -> UserServiceCredentialStuffing", fired_at - started)
            resolved = await stack.wait_until_gone("UserServiceCredentialStuffing", RESOLVES_WITHIN)
            report("stuffing over -> abuse ticket resolved", resolved)
    finally:
        server.stop()


async def test_a_mail_server_refusing_opens_the_outbox_and_delivery_tickets_and_recovery_resolves_them(
    server_process: Callable[..., ServerProcess], tmp_path: Path
) -> None:
    # Retries back off as in production, scaled like the rules (5 s base, 15 min at most).
    backoff = {
        "USER_SERVICE_MAIL__RETRY_BASE_SECONDS": str(5 / TIME_SCALE),
        "USER_SERVICE_MAIL__RETRY_MAX_SECONDS": str(900 / TIME_SCALE),
    }
    with smtp_server() as smtp:
        server = server_process(**smtp.env(), **backoff).start()
        try:
            async with alert_stack(tmp_path / "stack", target_of(server)) as stack, traffic(server.base_url, "steady"):
                await quiet_start(stack)
                smtp.refuse_for(3600)  # a 451 to every message: mail waits in the outbox
                async with httpx.AsyncClient(base_url=server.base_url, timeout=30) as client:
                    assert (await client.post(REGISTER, json=register_body("waiting"))).status_code == 201
                refused = time.monotonic()
                fired = await stack.wait_for("UserServiceMailOutboxStuck", ARRIVES_WITHIN, severity="warning")
                report("mail server refusing -> UserServiceMailOutboxStuck", fired)
                assert smtp.refusals > 0
                smtp.accept()
                resolved = await stack.wait_until_gone("UserServiceMailOutboxStuck", RESOLVES_WITHIN)
                report("mail server accepting again -> outbox ticket resolved", resolved)
                assert any("waiting@example.com" in mail.recipients for mail in smtp.received), (
                    time.monotonic() - refused
                )
                # A relay refusing for good: the mail is given up at once, a bad event of the
                # mail-delivery objective at any age, and its burn-rate ticket opens.
                smtp.refuse_for(3600, reply="550 5.7.1 Sender rejected")
                async with httpx.AsyncClient(base_url=server.base_url, timeout=30) as client:
                    assert (await client.post(REGISTER, json=register_body("lost"))).status_code == 201
                fired = await stack.wait_for("UserServiceMailDeliveryBudgetBurn", ARRIVES_WITHIN, severity="warning")
                report("mail refused for good -> UserServiceMailDeliveryBudgetBurn", fired)
                smtp.accept()
                resolved = await stack.wait_until_gone("UserServiceMailDeliveryBudgetBurn", RESOLVES_WITHIN)
                report("no more mail given up -> delivery ticket resolved", resolved)
        finally:
            server.stop()


async def test_killing_the_service_pages_and_the_page_reaches_the_pager(
    server_process: Callable[..., ServerProcess], tmp_path: Path
) -> None:
    server = server_process().start()
    try:
        async with alert_stack(tmp_path / "stack", target_of(server)) as stack:
            await quiet_start(stack)
            server.kill()
            killed = time.monotonic()
            fired = await stack.wait_for("UserServiceDown", ARRIVES_WITHIN, severity="critical")
            report("service killed -> UserServiceDown page at Alertmanager", fired)
            # The shipped route sends a page after its 10 s group_wait, to the pager. (The
            # outside probe fails too; its page may go first, and is then held back.)
            summary = "Every user-service instance is failing its scrape"

            def down_pages() -> list[Notification]:
                return [
                    n for n in stack.sink.received if n.path == "/pagerduty" and summary in n.body["payload"]["summary"]
                ]

            while not down_pages():
                assert time.monotonic() - killed < ARRIVES_WITHIN + 15, f"no page sent: {stack.sink.received}"
                await asyncio.sleep(0.25)
            event = down_pages()[0]
            report("UserServiceDown at Alertmanager -> the pager's endpoint", event.at - killed - fired, scaled=False)
            assert event.body["event_action"] == "trigger"
            assert event.body["routing_key"] == "test-routing-key"
            server.start()
            resolved = await stack.wait_until_gone("UserServiceDown", RESOLVES_WITHIN)
            report("service back -> UserServiceDown resolved", resolved)
    finally:
        server.stop()


async def test_the_watchdog_heartbeat_reaches_the_dead_mans_switch(
    server_process: Callable[..., ServerProcess], tmp_path: Path
) -> None:
    """The always-firing Watchdog leaves Alertmanager for the dead man's switch at once and
    then every minute, with the switch's key from its file, and goes nowhere else."""
    server = server_process().start()
    try:
        async with alert_stack(tmp_path / "stack", target_of(server)) as stack:
            started = time.monotonic()
            while not [n for n in stack.sink.received if n.path == DEADMAN_PATH]:
                assert time.monotonic() - started < ARRIVES_WITHIN, f"no heartbeat: {stack.sink.received}"
                await asyncio.sleep(0.25)
            report("rules loaded -> first Watchdog heartbeat", time.monotonic() - started, scaled=False)
            beat = next(n for n in stack.sink.received if n.path == DEADMAN_PATH)
            assert beat.authorization == "GenieKey test-deadman-key"
            assert [a["labels"]["alertname"] for a in beat.body["alerts"]] == [WATCHDOG]
            assert await stack.alerts(WATCHDOG)
            assert not stack.notifications()
    finally:
        server.stop()


async def test_normal_load_for_as_long_fires_nothing(
    server_process: Callable[..., ServerProcess], tmp_path: Path
) -> None:
    server = server_process().start()
    try:
        async with alert_stack(tmp_path / "stack", target_of(server)) as stack, traffic(server.base_url, "steady") as t:
            await quiet_start(stack)
            # As long as the longest fault above takes to fire and resolve, at the same load.
            # Pending is allowed: a scaled ticket tier sees a couple of slow logins on a busy
            # machine as a burn for a moment; it must not last long enough to fire.
            deadline = time.monotonic() + 45
            pending: set[str] = set()
            while time.monotonic() < deadline:
                states = await stack.pending_or_firing()
                assert not [s for s in states if s.endswith("firing")], f"{states}; {sum(t.statuses.values())} requests"
                pending.update(states)
                await asyncio.sleep(1)
            if pending:
                sys.stdout.write(f"\n[normal load] pending for a moment, never firing: {sorted(pending)}\n")
            assert await stack.alerts() == []
            assert set(t.statuses) == {200}, t.statuses
            assert not stack.notifications()
    finally:
        server.stop()
