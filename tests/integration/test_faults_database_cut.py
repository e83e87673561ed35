"""Faults on the real process (``python -m app`` on PostgreSQL), with what a client sees:

- the database connection cut while API requests are in flight, some of them inside a
  write transaction: fast 503 problem details, nothing half-written, full recovery;
- a login storm at twice the hashing capacity: sheds (503 + Retry-After), no timeouts,
  and a liveness probe that stays fast;
- SIGTERM in the middle of a registration load: every 201 has its row and every row its
  201; what comes after the drain is refused, never acknowledged and lost.

tests/integration/test_lifecycle.py covers readiness following the database, the drain of
in-flight logins and liveness under a saturated (not overflowing) pool; these go further.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import statistics
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from tests.integration.helpers import PASSWORD
from tests.server_process import CLEAN_EXIT, ServerProcess
from tests.tcp_proxy import TcpProxy

# These tests are about capacity and the database, not the abuse protections.
UNTHROTTLED = {"USER_SERVICE_RATE_LIMITS__ENABLED": "false", "USER_SERVICE_LOGIN_THROTTLE__ENABLED": "false"}
REGISTER = "/api/v1/auth/register"
LOGIN = "/api/v1/auth/login"
ME = "/api/v1/users/me"
# What the service is configured with below; the bounds are derived from them.
POOL_TIMEOUT_SECONDS = 5
STATEMENT_TIMEOUT_MS = 10_000


def is_problem(response: httpx.Response, status: int, kind: str) -> bool:
    return (
        response.status_code == status
        and response.headers.get("content-type", "").startswith("application/problem+json")
        and response.json()["type"].endswith("/" + kind)
        and int(response.headers.get("retry-after", "0")) >= 1
    )


class ThreadedProxy:
    """tests/tcp_proxy.py on an event loop of its own, so it keeps relaying while the test
    blocks (ServerProcess.start polls synchronously) and cuts at an exact moment."""

    def __init__(self, upstream_host: str, upstream_port: int) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._proxy = TcpProxy(upstream_host, upstream_port)
        self.port = self._proxy.port

    def _call(self, make: Callable[[], Any]) -> None:
        asyncio.run_coroutine_threadsafe(make(), self._loop).result(timeout=10)

    def __enter__(self) -> ThreadedProxy:
        self._thread.start()
        self._call(self._proxy.start)
        return self

    def cut(self) -> None:
        self._call(self._proxy.cut)

    def restore(self) -> None:
        self._call(self._proxy.restore)

    def __exit__(self, *exc: object) -> None:
        self._call(self._proxy.cut)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)


@contextlib.contextmanager
def proxied_server(
    server_process: Callable[..., ServerProcess], database_url: str, **env: str
) -> Iterator[tuple[ServerProcess, ThreadedProxy]]:
    real = make_url(database_url)
    with ThreadedProxy(real.host or "127.0.0.1", real.port or 5432) as proxy:
        via_proxy = real.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
        server = server_process(USER_SERVICE_DB__URL=via_proxy, **env).start()
        try:
            yield server, proxy
        finally:
            server.stop()


async def _waiting_on_users_lock(db: AsyncEngine) -> int:
    async with db.connect() as conn:
        return int(
            (
                await conn.execute(
                    text(
                        "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid"
                        " WHERE NOT l.granted AND l.relation = 'users'::regclass"
                        " AND a.application_name = 'user-service'"
                    )
                )
            ).scalar_one()
        )


async def _until(condition: Callable[[], Any], within: float, what: str) -> float:
    """Polls ``condition`` (a coroutine function) until truthy; returns the seconds it took."""
    started = time.monotonic()
    while not await condition():
        assert time.monotonic() - started < within, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)
    return time.monotonic() - started


async def _scalar(db: AsyncEngine, sql: str, **params: Any) -> Any:
    async with db.connect() as conn:
        return (await conn.execute(text(sql), params)).scalar_one()


@dataclass
class Timed:
    response: httpx.Response
    finished: float  # time.monotonic() when the answer arrived


async def _timed(request: Any) -> Timed:
    response = await request
    return Timed(response, time.monotonic())


def _register_body(username: str) -> dict[str, str]:
    return {"username": username, "email": f"{username}@example.com", "password": PASSWORD}


@pytest.mark.slow
async def test_database_cut_with_requests_in_flight_gives_fast_503s_nothing_half_written_and_recovery(
    server_process: Callable[..., ServerProcess], clean_database: str, db_engine: AsyncEngine
) -> None:
    with proxied_server(
        server_process,
        clean_database,
        USER_SERVICE_DB__POOL_TIMEOUT_SECONDS=str(POOL_TIMEOUT_SECONDS),
        USER_SERVICE_DB__STATEMENT_TIMEOUT_MS=str(STATEMENT_TIMEOUT_MS),
        **UNTHROTTLED,
    ) as (server, proxy):
        limits = httpx.Limits(max_connections=100, max_keepalive_connections=100)
        async with httpx.AsyncClient(base_url=server.base_url, timeout=60, limits=limits) as client:
            await _exercise_database_cut(client, proxy, db_engine)


async def _exercise_database_cut(client: httpx.AsyncClient, proxy: ThreadedProxy, db: AsyncEngine) -> None:
    for name in ("reader", "signer1", "signer2", "signer3", "signer4"):
        assert (await client.post(REGISTER, json=_register_body(name))).status_code == 201
    reader = (await client.post(LOGIN, json={"username": "reader", "password": PASSWORD})).json()
    me = {"Authorization": f"Bearer {reader['access_token']}"}
    sessions_before = await _scalar(db, "SELECT count(*) FROM auth_sessions")

    # Hold the users table so that writes wait inside their transactions: registrations at
    # their INSERT, logins at their session's foreign-key check. Reads still pass.
    async with db.connect() as locker:
        await locker.begin()
        await locker.execute(text("LOCK TABLE users IN EXCLUSIVE MODE"))
        writers = [f"inflight{i}" for i in range(8)]
        in_flight = [asyncio.ensure_future(_timed(client.post(REGISTER, json=_register_body(n)))) for n in writers]
        in_flight += [
            asyncio.ensure_future(_timed(client.post(LOGIN, json={"username": f"signer{i}", "password": PASSWORD})))
            for i in range(1, 5)
        ]
        await _until(lambda: _is(_waiting_on_users_lock(db), 12), 30, "12 writes waiting inside transactions")
        assert not any(task.done() for task in in_flight)
        assert (await client.get(ME, headers=me)).status_code == 200  # reads are not held

        proxy.cut()
        cut_at = time.monotonic()
        answered = await asyncio.wait_for(asyncio.gather(*in_flight), timeout=60)
        in_flight_latency = [t.finished - cut_at for t in answered]
        registrations, logins = answered[: len(writers)], answered[len(writers) :]
        assert all(is_problem(t.response, 503, "dependency-unavailable") for t in logins), [
            (t.response.status_code, t.response.text) for t in logins
        ]
        # While it is down: every kind of request is refused at once, the process lives on.
        during: list[float] = []
        requests: list[tuple[str, str, dict[str, Any]]] = [
            ("GET", ME, {"headers": me}),
            ("POST", LOGIN, {"json": {"username": "signer1", "password": PASSWORD}}),
            ("POST", REGISTER, {"json": _register_body("during_outage")}),
        ]
        for method, path, arguments in requests:
            for _ in range(3):
                started = time.monotonic()
                response = await client.request(method, path, **arguments)
                during.append(time.monotonic() - started)
                assert is_problem(response, 503, "dependency-unavailable"), response.text
        assert (await client.get("/health/live")).status_code == 200
        assert (await client.get("/health/ready")).status_code == 503
        await locker.rollback()

    # Bounded well under what the configuration would let a request wait (pool timeout +
    # statement timeout): the cut is noticed when the socket dies, not by a timer.
    bound = POOL_TIMEOUT_SECONDS
    assert max(in_flight_latency) < bound, in_flight_latency
    assert max(during) < bound, during

    # The held writes resume in PostgreSQL once the lock goes, find their client gone and
    # roll back: none of them may have left a row.
    await _until(lambda: _is(_waiting_on_users_lock(db), 0), 30, "the held writes to end")
    await _until(lambda: _idle_service_backends(db), 30, "the cut-off backends to exit")
    assert await _scalar(db, "SELECT count(*) FROM users WHERE username LIKE 'inflight%'") == 0
    assert await _scalar(db, "SELECT count(*) FROM users WHERE username = 'during_outage'") == 0
    assert await _scalar(db, "SELECT count(*) FROM auth_sessions") == sessions_before
    assert await _scalar(db, _SESSIONS_WITHOUT_TOKENS) == 0

    proxy.restore()
    restored_at = time.monotonic()
    recovery = await _until(lambda: _ready(client), 30, "readiness after the database returned")
    # Full recovery: the same process answers reads and writes, and the writes are stored.
    after = [await client.get(ME, headers=me) for _ in range(20)]
    assert [r.status_code for r in after] == [200] * 20
    assert (await client.post(REGISTER, json=_register_body("after_outage"))).status_code == 201
    login = await client.post(LOGIN, json={"username": "after_outage", "password": PASSWORD})
    assert login.status_code == 200
    assert await _scalar(db, "SELECT count(*) FROM users WHERE username = 'after_outage'") == 1
    assert await _scalar(db, _SESSIONS_WITHOUT_TOKENS) == 0
    wrong = [
        (t.response.status_code, t.response.text)
        for t in registrations
        if not is_problem(t.response, 503, "dependency-unavailable")
    ]
    print(  # noqa: T201 - the measurements docs/fuzzing-and-faults.md reports (-s shows them)
        f"\ndatabase cut: {len(answered)} in-flight writes answered "
        f"{sorted(Counter(t.response.status_code for t in answered).items())} in "
        f"{min(in_flight_latency) * 1000:.0f}-{max(in_flight_latency) * 1000:.0f} ms after the cut; "
        f"{len(during)} requests during the outage in {statistics.median(during) * 1000:.1f} ms median, "
        f"{max(during) * 1000:.1f} ms max; ready again {recovery:.2f} s after the restore "
        f"({time.monotonic() - restored_at:.2f} s until 20 reads, a registration and a login had succeeded)"
    )
    if wrong:
        raise AssertionError(f"registrations cut off mid-INSERT were answered {wrong}")


_SESSIONS_WITHOUT_TOKENS = (
    "SELECT count(*) FROM auth_sessions s WHERE NOT EXISTS (SELECT 1 FROM refresh_tokens t WHERE t.session_id = s.id)"
)


async def _is(value: Any, expected: int) -> bool:
    return bool(await value == expected)


async def _idle_service_backends(db: AsyncEngine) -> bool:
    busy = await _scalar(
        db,
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
        " AND application_name = 'user-service' AND state <> 'idle'",
    )
    return bool(busy == 0)


async def _ready(client: httpx.AsyncClient) -> bool:
    return (await client.get("/health/ready")).status_code == 200


# --- a login storm at twice the hashing capacity -------------------------------------------

STORM_POOL, STORM_QUEUE = 1, 8
# ~50 ms a verify on an idle CI machine: a burst arrives in a few milliseconds, long before
# the first admitted login is done, so the rest of the burst meets a full pool and queue.
STORM_HASHING = {"USER_SERVICE_PASSWORDS__TIME_COST": "2", "USER_SERVICE_PASSWORDS__MEMORY_COST_KIB": "16384"}
CAPACITY = STORM_POOL + STORM_QUEUE


def _verify_seconds(base: str) -> float:
    samples = {
        s.name: s.value
        for family in text_string_to_metric_families(httpx.get(f"{base}/metrics", timeout=10).text)
        for s in family.samples
        if s.name.startswith("user_service_password_hash_duration_seconds") and s.labels.get("operation") == "verify"
    }
    return (
        samples["user_service_password_hash_duration_seconds_sum"]
        / samples["user_service_password_hash_duration_seconds_count"]
    )


@pytest.mark.slow
def test_a_login_storm_at_twice_the_hashing_capacity_is_shed_without_timeouts(
    server_process: Callable[..., ServerProcess],
) -> None:
    server = server_process(
        **STORM_HASHING,
        USER_SERVICE_PASSWORDS__POOL_SIZE=str(STORM_POOL),
        USER_SERVICE_PASSWORDS__QUEUE_SIZE=str(STORM_QUEUE),
        **UNTHROTTLED,
    ).start()
    try:
        result = asyncio.run(_storm(server.base_url, rounds=3))
        one_verify = _verify_seconds(server.base_url)
    finally:
        server.stop()
    statuses = [r.status_code for r in result.logins]
    assert set(statuses) <= {200, 401, 503}, statuses
    shed = [r for r in result.logins if r.status_code == 503]
    assert all(is_problem(r, 503, "hashing-capacity-exceeded") for r in shed), [r.text for r in shed]
    # The storm really overflowed the pool and its queue in every round, and whatever was
    # admitted got its real answer (the wrong passwords a 401, the right ones a 200).
    assert all(sheds >= 1 for sheds in result.sheds_per_round), result.sheds_per_round
    assert {200, 401} <= set(statuses)
    assert result.after_storm == 200
    # Liveness never waited behind the hashing. The yardstick is one verify as the service
    # measured it in this run (it stretches with the machine's load, as the probes do): a
    # probe queued behind hashes would take about one verify at the median; these take a
    # small fraction of it, and even their slow tail stays under one.
    median, p95 = statistics.median(result.probes), statistics.quantiles(result.probes, n=20)[-1]
    assert len(result.probes) >= 20
    assert median < 0.25 * one_verify, (one_verify, median)
    assert p95 < one_verify, (one_verify, sorted(result.probes)[-5:])
    print(  # noqa: T201 - the measurements docs/fuzzing-and-faults.md reports (-s shows them)
        f"\nlogin storm: capacity {CAPACITY}, {len(result.sheds_per_round)} bursts of {2 * CAPACITY}: "
        f"{statuses.count(200)} x 200, {statuses.count(401)} x 401, {len(shed)} x 503 (per burst "
        f"{result.sheds_per_round}); slowest answer {max(result.latencies):.2f} s; one verify "
        f"{one_verify * 1000:.0f} ms; /health/live median {median * 1000:.1f} ms, "
        f"p95 {p95 * 1000:.1f} ms over {len(result.probes)} probes (before the storm: median "
        f"{statistics.median(result.idle_probes) * 1000:.1f} ms, p95 "
        f"{statistics.quantiles(result.idle_probes, n=20)[-1] * 1000:.1f} ms)"
    )


@dataclass
class StormResult:
    logins: list[httpx.Response]
    latencies: list[float]
    sheds_per_round: list[int]
    probes: list[float]
    idle_probes: list[float]
    after_storm: int


async def _probe_until(client: httpx.AsyncClient, stop: asyncio.Event, into: list[float]) -> None:
    while not stop.is_set():
        started = time.perf_counter()
        assert (await client.get("/health/live")).status_code == 200
        into.append(time.perf_counter() - started)
        await asyncio.sleep(0.01)


async def _storm(base: str, rounds: int) -> StormResult:
    limits = httpx.Limits(max_connections=4 * CAPACITY, max_keepalive_connections=4 * CAPACITY)
    # The client waits far longer than any admitted login can take (CAPACITY verifies):
    # a timeout here would be the service failing to shed.
    async with (
        httpx.AsyncClient(base_url=base, timeout=120, limits=limits) as client,
        httpx.AsyncClient(base_url=base, timeout=30) as prober,
    ):
        body = {"username": "stormed", "email": "stormed@example.com", "password": PASSWORD}
        assert (await client.post(REGISTER, json=body)).status_code == 201
        idle: list[float] = []
        stop = asyncio.Event()
        idle_task = asyncio.ensure_future(_probe_until(prober, stop, idle))
        await asyncio.sleep(1)
        stop.set()
        await idle_task

        probes: list[float] = []
        stop = asyncio.Event()
        probing = asyncio.ensure_future(_probe_until(prober, stop, probes))
        logins: list[httpx.Response] = []
        latencies: list[float] = []
        sheds: list[int] = []
        for _ in range(rounds):
            burst = [
                _timed_login(client, PASSWORD if i % 2 else "wrong-password-for-the-storm") for i in range(2 * CAPACITY)
            ]
            answered = await asyncio.gather(*burst)
            logins += [response for response, _ in answered]
            latencies += [seconds for _, seconds in answered]
            sheds.append(sum(response.status_code == 503 for response, _ in answered))
            await asyncio.sleep(1)  # what Retry-After asks of a client
        stop.set()
        await probing
        after = await client.post(LOGIN, json={"username": "stormed", "password": PASSWORD})
        return StormResult(logins, latencies, sheds, probes, idle, after.status_code)


async def _timed_login(client: httpx.AsyncClient, password: str) -> tuple[httpx.Response, float]:
    started = time.perf_counter()
    response = await client.post(LOGIN, json={"username": "stormed", "password": password})
    return response, time.perf_counter() - started


# --- SIGTERM during a registration load ----------------------------------------------------


@dataclass
class Attempt:
    username: str
    sent: float
    outcome: int | str  # the status, or the transport error's class name


def _register_until(base: str, prefix: str, stop: threading.Event) -> list[Attempt]:
    attempts: list[Attempt] = []
    refused_in_a_row = 0
    # A new connection for every request: a refused connect then proves the request was
    # never received (a reused keep-alive connection could die with the request unread).
    limits = httpx.Limits(max_keepalive_connections=0)
    with httpx.Client(base_url=base, timeout=60, limits=limits) as client:
        for i in range(100_000):
            if stop.is_set() or refused_in_a_row >= 3:
                break
            username = f"{prefix}_{i}"
            sent = time.monotonic()
            try:
                outcome: int | str = client.post(REGISTER, json=_register_body(username)).status_code
                refused_in_a_row = 0
            except httpx.TransportError as exc:
                outcome = type(exc).__name__
                refused_in_a_row += isinstance(exc, httpx.ConnectError)
                time.sleep(0.05)
            attempts.append(Attempt(username, sent, outcome))
    return attempts


@pytest.mark.slow
def test_sigterm_during_a_registration_load_loses_no_committed_registration(
    server_process: Callable[..., ServerProcess], clean_database: str
) -> None:
    server = server_process(
        USER_SERVICE_HTTP__DRAIN_SECONDS="1",
        USER_SERVICE_SERVER__GRACEFUL_TIMEOUT_SECONDS="10",
        # A few milliseconds of argon2 per registration, so that requests are inside the
        # service (hashing, inserting) at every moment of the shutdown.
        USER_SERVICE_PASSWORDS__TIME_COST="1",
        USER_SERVICE_PASSWORDS__MEMORY_COST_KIB="4096",
        **UNTHROTTLED,
    ).start()
    stop = threading.Event()
    clients = 8
    with ThreadPoolExecutor(max_workers=clients) as pool:
        load: list[Future[list[Attempt]]] = [
            pool.submit(_register_until, server.base_url, f"load{n}", stop) for n in range(clients)
        ]
        time.sleep(1.5)
        sigterm_at = time.monotonic()
        server.signal(signal.SIGTERM)
        try:
            exit_code = server.wait(timeout=60)
        finally:
            stop.set()
            server.kill()
        exited_at = time.monotonic()
        attempts = [attempt for future in load for attempt in future.result()]
    assert exit_code in CLEAN_EXIT, server.output

    rows = set(asyncio.run(_usernames(clean_database)))
    created = {a.username for a in attempts if a.outcome == 201}
    outcomes = {a.outcome for a in attempts}
    ambiguous = {a.username for a in attempts if isinstance(a.outcome, str) and a.outcome != "ConnectError"}
    assert {o for o in outcomes if isinstance(o, int)} <= {201, 503}, outcomes
    # Nothing acknowledged was lost, nothing refused was stored.
    assert created - rows == set(), f"201 without a row: {sorted(created - rows)[:10]}"
    assert rows - created <= ambiguous, f"rows without a 201: {sorted(rows - created - ambiguous)[:10]}"
    # The load really spanned the shutdown: acknowledged during the drain, refused after.
    assert any(a.outcome == 201 and a.sent > sigterm_at for a in attempts), "nothing was served during the drain"
    assert any(a.outcome == "ConnectError" for a in attempts), "nothing was refused after the drain"
    assert not any(a.outcome == 201 and a.sent > exited_at for a in attempts)
    late = [a for a in attempts if a.sent > sigterm_at]
    print(  # noqa: T201 - the measurements docs/fuzzing-and-faults.md reports (-s shows them)
        f"\nSIGTERM under load: {len(attempts)} registrations from {clients} clients, {len(created)} x 201 = "
        f"{len(rows)} rows; after the signal {sum(a.outcome == 201 for a in late)} x 201 (drain), "
        f"{sum(a.outcome == 503 for a in late)} x 503, "
        f"{sorted(Counter(a.outcome for a in late if isinstance(a.outcome, str)).items())} transport errors; "
        f"exit {exit_code} {exited_at - sigterm_at:.1f} s after SIGTERM"
    )


async def _usernames(url: str) -> list[str]:
    engine = create_async_engine(url)
    async with engine.connect() as conn:
        names = (await conn.execute(text("SELECT username FROM users WHERE username LIKE 'load%'"))).scalars().all()
    await engine.dispose()
    return list(names)
