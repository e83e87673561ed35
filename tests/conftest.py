"""Shared fixtures: a real PostgreSQL migrated by the real CLI, and apps built from Settings."""

from __future__ import annotations

import inspect
import os
import secrets
import tempfile
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import anyio
import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from app.identity.tokens import generate_private_key_pem
from app.main import create_app
from app.settings import (
    DatabaseSettings,
    Environment,
    HttpSettings,
    LoginThrottleSettings,
    MailSettings,
    PasswordSettings,
    RateLimitSettings,
    Settings,
    TokenSettings,
)
from testkit.live_server import LiveClient, serve
from testkit.postgres import existing_or_throwaway, migrate
from testkit.redis_server import forget_service_keys, throwaway_redis
from testkit.server_process import ServerProcess

ROOT = Path(__file__).resolve().parent.parent
# The cheapest argon2id the library allows: tests exercise the logic, not the cost.
FAST_ARGON2 = {"time_cost": 1, "memory_cost_kib": 64, "parallelism": 1}


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="session")
def database_url() -> Iterator[str]:
    """TEST_DATABASE_URL (wiped and migrated) or a throwaway server of our own."""
    with existing_or_throwaway(os.environ.get("TEST_DATABASE_URL")) as url:
        yield url


@pytest.fixture(scope="session")
def migrated_database(database_url: str) -> str:
    """The schema comes from the same command production runs: ``litestar schema migrate``,
    on an emptied public schema (the test database is disposable)."""
    migrate(database_url, drop_first=True)
    return database_url


@pytest.fixture(scope="session")
def signing_key_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("keys") / "signing.pem"
    path.write_bytes(generate_private_key_pem())
    return path


def make_settings(database_url: str, signing_key_file: Path, **overrides: object) -> Settings:
    """Test settings; ``passwords=``/``tokens=``/``db=``/``http=`` dicts override single fields."""
    groups: dict[str, dict[str, object]] = {
        "db": {"url": database_url, "pool_size": 20, "max_overflow": 0},
        "passwords": {**FAST_ARGON2, "pool_size": 2, "queue_size": 64},
        "tokens": {"signing_key_file": signing_key_file},
        "http": {},
        # Every test client is 127.0.0.1: per-address limits would couple unrelated tests.
        # tests/integration/test_edge.py turns them on where it tests them.
        "rate_limits": {"enabled": False},
        "login_throttle": {},
        # Registration queues a verification mail: no test delivers it unless it asks for
        # mail (tests/integration/mail_flows.py), and none writes into the checkout.
        "mail": {"worker_enabled": False, "file_directory": Path(tempfile.gettempdir()) / "user-service-test-mail"},
    }
    for group, values in overrides.items():
        assert isinstance(values, dict)
        groups[group].update(values)
    return Settings(
        environment=Environment.TEST,
        db=DatabaseSettings.model_validate(groups["db"]),
        passwords=PasswordSettings.model_validate(groups["passwords"]),
        tokens=TokenSettings.model_validate(groups["tokens"]),
        http=HttpSettings.model_validate(groups["http"]),
        rate_limits=RateLimitSettings.model_validate(groups["rate_limits"]),
        login_throttle=LoginThrottleSettings.model_validate(groups["login_throttle"]),
        mail=MailSettings.model_validate(groups["mail"]),
    )


@pytest.fixture
def clean_database(migrated_database: str) -> Iterator[str]:
    """The migrated database, emptied after the test (whether it used the API, a server
    process or SQL), so that no test sees another's rows."""
    yield migrated_database
    _truncate(migrated_database)


def _truncate(url: str) -> None:

    async def truncate() -> None:
        engine = create_async_engine(url)
        async with engine.begin() as conn:
            await conn.execute(
                text("TRUNCATE users, auth_sessions, refresh_tokens, login_throttle, outbox_messages CASCADE")
            )
        await engine.dispose()

    anyio.run(truncate)


@pytest.fixture
def settings(clean_database: str, signing_key_file: Path) -> Settings:
    return make_settings(clean_database, signing_key_file)


@pytest.fixture
async def db_engine(clean_database: str) -> AsyncIterator[AsyncEngine]:
    """Direct database access for arranging and checking what the API cannot show."""
    engine = create_async_engine(clean_database)
    yield engine
    await engine.dispose()


@pytest.fixture
async def client(settings: Settings, db_engine: AsyncEngine) -> AsyncIterator[LiveClient]:
    """The app behind a real uvicorn server on 127.0.0.1, and an httpx client for it."""
    async with serve(create_app(settings)) as live_client:
        yield live_client


@pytest.hookimpl(tryfirst=True)
def pytest_pycollect_makeitem(collector: pytest.Collector, name: str, obj: object) -> None:
    """Every ``async def test_*`` runs on anyio's asyncio backend without a marker of its own."""
    if name.startswith("test") and inspect.iscoroutinefunction(obj):
        pytest.mark.anyio(obj)


@pytest.fixture
def server_process(settings: Settings, signing_key_file: Path, tmp_path: Path) -> Callable[..., ServerProcess]:
    """Builds (does not start) the real service process on the test database; keyword
    arguments are extra environment variables."""

    def build(**env: str) -> ServerProcess:
        return ServerProcess(
            database_url=settings.db.url, signing_key_file=signing_key_file, log_file=tmp_path / "server.log", **env
        )

    return build


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with throwaway_redis(tmp_path_factory.mktemp("redis")) as url:
        yield url


@pytest.fixture
def redis_url(redis_server: str) -> Iterator[str]:
    """A Redis with none of the service's keys, before and after the test."""
    forget_service_keys(redis_server)
    yield redis_server
    forget_service_keys(redis_server)


@pytest.fixture
def fresh_database(database_url: str) -> Iterator[str]:
    """A database of its own on the test server, empty, dropped after: for a test that changes
    the schema (the shared test database stays at this release's head)."""
    name = f"user_service_own_{secrets.token_hex(4)}"
    server = make_url(database_url)

    async def admin(statement: str) -> None:
        engine = create_async_engine(server.set(database="postgres"), isolation_level="AUTOCOMMIT")
        async with engine.connect() as conn:
            await conn.execute(text(statement))
        await engine.dispose()

    anyio.run(admin, f'CREATE DATABASE "{name}"')
    try:
        yield server.set(database=name).render_as_string(hide_password=False)
    finally:
        anyio.run(admin, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
