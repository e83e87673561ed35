"""The database and Redis in view, proven against the real exporters: Debian's
postgres_exporter on the test PostgreSQL and redis_exporter on a throwaway Redis, scraped
by a real Prometheus beside the service (which uses both) under a little traffic. Every
query of the dependencies dashboard must return data, as every query of the service's own
dashboards must in test_prometheus_e2e.py.

CloudNativePG's exporter cannot run here (no cluster): a second postgres_exporter runs
tests/deploy/cnpg/queries.yaml, which answers with CloudNativePG's metric names, as job
user-service-db, the job k8s/overlays/prod/postgres-podmonitor.yaml gives the cluster."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import httpx
import pytest
from sqlalchemy.engine import make_url

from testkit.ports import free_port
from testkit.server_process import ServerProcess
from tests.deploy.alert_stack import running_prometheus, until_every_panel_has_data
from tests.deploy.artifacts import DEPENDENCIES_DASHBOARD, require_tool
from tests.integration.faults import LOGIN, REGISTER, register_body
from tests.integration.helpers import PASSWORD

pytestmark = pytest.mark.slow

CNPG_QUERIES = Path(__file__).parent / "cnpg" / "queries.yaml"


def exporter_dsn(database_url: str) -> str:
    """The service's SQLAlchemy URL as the libpq URL postgres_exporter takes."""
    url = make_url(database_url).set(drivername="postgresql")
    return url.render_as_string(hide_password=False) + "?sslmode=disable"


@contextlib.asynccontextmanager
async def exporter(command: list[str], log_file: Path, **env: str) -> AsyncIterator[None]:
    with log_file.open("wb") as log:
        process = await asyncio.create_subprocess_exec(*command, env=env or None, stdout=log, stderr=log)
    try:
        yield
    finally:
        process.terminate()
        await process.wait()


async def test_every_dependency_panel_has_data_from_the_real_exporters(
    server_process: Callable[..., ServerProcess], clean_database: str, redis_url: str, tmp_path: Path
) -> None:
    pg_port, cnpg_port, redis_port = free_port(), free_port(), free_port()
    server = server_process(USER_SERVICE_REDIS_URL=redis_url, USER_SERVICE_RATE_LIMITS__ENABLED="true").start()
    try:
        postgres_exporter = exporter(
            [require_tool("prometheus-postgres-exporter"), f"--web.listen-address=127.0.0.1:{pg_port}"],
            tmp_path / "postgres-exporter.log",
            DATA_SOURCE_NAME=exporter_dsn(clean_database),
        )
        # Its own collectors off: only the stand-in's series, as CloudNativePG exports.
        cnpg_exporter = exporter(
            [
                require_tool("prometheus-postgres-exporter"),
                f"--web.listen-address=127.0.0.1:{cnpg_port}",
                f"--extend.query-path={CNPG_QUERIES}",
                "--disable-default-metrics",
                "--disable-settings-metrics",
            ],
            tmp_path / "cnpg-exporter.log",
            DATA_SOURCE_NAME=exporter_dsn(clean_database),
        )
        redis_exporter = exporter(
            [
                require_tool("prometheus-redis-exporter"),
                *("-redis.addr", redis_url.rsplit("/", 1)[0]),
                *("-web.listen-address", f"127.0.0.1:{redis_port}"),
            ],
            tmp_path / "redis-exporter.log",
        )
        jobs = {
            "user-service": f"127.0.0.1:{server.port}",
            "postgres": f"127.0.0.1:{pg_port}",
            "user-service-db": f"127.0.0.1:{cnpg_port}",
            "redis": f"127.0.0.1:{redis_port}",
        }
        async with (
            postgres_exporter,
            cnpg_exporter,
            redis_exporter,
            running_prometheus(tmp_path / "prometheus", jobs) as prometheus,
            httpx.AsyncClient(base_url=server.base_url, timeout=30) as client,
        ):
            assert (await client.post(REGISTER, json=register_body("watched"))).status_code == 201
            traffic = asyncio.create_task(logins(client))
            try:
                empty = await until_every_panel_has_data(prometheus, DEPENDENCIES_DASHBOARD, within=45)
            finally:
                traffic.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await traffic
    finally:
        server.stop()
    assert not empty, "no data:\n" + "\n".join(empty) + "\n" + exporter_logs(tmp_path)


def exporter_logs(folder: Path) -> str:
    return "\n".join(p.read_text(errors="replace")[-1500:] for p in folder.glob("*-exporter.log"))


async def logins(client: httpx.AsyncClient) -> None:
    """Commits in PostgreSQL, counters in Redis (rate limits, the login throttle)."""
    while True:
        await client.post(LOGIN, json={"username": "watched", "password": PASSWORD})
        await asyncio.sleep(0.3)
