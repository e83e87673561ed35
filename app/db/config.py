"""Engine, session and Alembic configuration for advanced-alchemy's Litestar plugin."""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Any
from uuid import uuid4

from advanced_alchemy.extensions.litestar import (
    AlembicAsyncConfig,
    AsyncSessionConfig,
    EngineConfig,
    SQLAlchemyAsyncConfig,
)
from sqlalchemy import event
from sqlalchemy.engine import make_url

from app.db.connections import TRANSACTION_POOLER
from app.db.pool import MeasuredQueuePool
from app.settings import DatabaseSettings, DatabaseSslMode

MIGRATIONS_DIR = Path(__file__).parent / "migrations"


def _engine_config(settings: DatabaseSettings, application_name: str) -> EngineConfig:
    if settings.is_embedded:
        return EngineConfig(echo=settings.echo, hide_parameters=True)
    server_settings = {"application_name": application_name}
    connect_args: dict[str, Any] = {
        "server_settings": server_settings,
        # Fail fast when the server is unreachable instead of hanging a request.
        "timeout": settings.pool_timeout_seconds,
    }
    if settings.ssl_mode is not None:
        connect_args["ssl"] = _ssl_argument(settings.ssl_mode, settings.ssl_root_cert)
    if settings.transaction_pooler:
        # A server connection is ours for one transaction only. asyncpg's statement caches
        # would name statements prepared on a server connection another client now holds
        # ("prepared statement ... does not exist", or "already exists" when two clients'
        # names meet), so nothing is cached and every name is unique. PgBouncer refuses
        # statement_timeout as a startup parameter ("unsupported startup parameter"): it
        # is set on the role (ALTER ROLE ... SET statement_timeout) by whoever runs the
        # database (k8s/overlays/prod/postgres-cluster.yaml).
        connect_args["statement_cache_size"] = 0
        connect_args["prepared_statement_cache_size"] = 0
        connect_args["prepared_statement_name_func"] = _unique_statement_name
    else:
        server_settings["statement_timeout"] = str(settings.statement_timeout_ms)
    return EngineConfig(
        echo=settings.echo,
        # Bound parameters (password hashes, token digests, emails) stay out of SQL logs
        # and out of exception messages.
        hide_parameters=True,
        pool_size=settings.pool_size,
        max_overflow=settings.max_overflow,
        pool_timeout=settings.pool_timeout_seconds,
        pool_pre_ping=settings.pool_pre_ping,
        pool_recycle=1800,
        # asyncio's queue pool, with every checkout's wait measured (app/db/pool.py).
        poolclass=MeasuredQueuePool,
        connect_args=connect_args,
        # Read by app/db/connections.py: no AUTOCOMMIT statements behind such a pooler.
        execution_options={TRANSACTION_POOLER: True} if settings.transaction_pooler else {},
    )


def _ssl_argument(mode: DatabaseSslMode, root_cert: Path | None) -> str | bool | ssl.SSLContext:
    """asyncpg's ``ssl`` argument for libpq's ``mode``. The verifying modes get a context of
    our own: asyncpg would read the CA only from PGSSLROOTCERT or ~/.postgresql, and a
    setting that lives beside the URL is harder to forget than a second variable."""
    if mode is DatabaseSslMode.DISABLE:
        return False
    if not mode.verifies:
        return mode.value
    try:
        context = ssl.create_default_context(cafile=str(root_cert) if root_cert is not None else None)
    except (OSError, ssl.SSLError) as error:
        # Read when the engine is built, at start: the pod fails with the setting's name.
        raise ValueError(f"USER_SERVICE_DB__SSL_ROOT_CERT: cannot load {root_cert}: {error}") from error
    # verify-ca: the chain must lead to the CA, whatever name the certificate carries.
    context.check_hostname = mode is DatabaseSslMode.VERIFY_FULL
    return context


def _unique_statement_name() -> str:
    return f"__asyncpg_{uuid4().hex}__"


def database_config(settings: DatabaseSettings, application_name: str = "user-service") -> SQLAlchemyAsyncConfig:
    if settings.is_embedded:
        _ensure_sqlite_directory(settings.url)
    config = SQLAlchemyAsyncConfig(
        connection_string=settings.url,
        engine_config=_engine_config(settings, application_name),
        session_config=AsyncSessionConfig(expire_on_commit=False),
        # Close (and so roll back) the request's session after the response. Writes commit
        # inside their use case instead: advanced-alchemy's "autocommit" handler commits
        # while the response is already on its way and only logs a failed commit, so the
        # client would get a 2xx for a write that was never stored.
        before_send_handler=None,
        # Repository errors go through app/web/problems.py like every other error (problem+json).
        set_default_exception_handler=False,
        create_all=False,
        alembic_config=AlembicAsyncConfig(
            script_location=str(MIGRATIONS_DIR),
            version_table_name="alembic_version",
            render_as_batch=True,
        ),
    )
    if settings.is_embedded:
        _enable_sqlite_foreign_keys(config)
    return config


def _ensure_sqlite_directory(url: str) -> None:
    database = make_url(url).database
    if database and database != ":memory:":
        Path(database).parent.mkdir(parents=True, exist_ok=True)


def _enable_sqlite_foreign_keys(config: SQLAlchemyAsyncConfig) -> None:
    engine = config.get_engine()

    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()
