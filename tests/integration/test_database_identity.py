"""Who the service is to PostgreSQL, and how it knows it reached the right server (issue 19,
point 5), on a real PostgreSQL of its own that speaks TLS only.

- TLS: ``USER_SERVICE_DB__SSL_MODE=verify-full`` with ``USER_SERVICE_DB__SSL_ROOT_CERT``
  refuses a server whose certificate another CA signed, or that does not carry the host's
  name; verify-ca checks the chain only.
- Roles: the SQL that production's CloudNativePG cluster runs at bootstrap
  (k8s/overlays/prod/postgres-cluster.yaml, read from the manifest itself) makes an owner
  that migrates and a runtime role that serves every flow but cannot change the schema.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import anyio
import httpx
import pytest
import yaml
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import create_async_engine

from app.db.config import database_config
from app.settings import DatabaseSettings, DatabaseSslMode
from testkit.postgres import migrate, throwaway_postgres
from testkit.server_process import ROOT, ServerProcess
from testkit.tls import LoopbackCertificate, loopback_certificate
from tests.integration.faults import accounts_in_parallel

CLUSTER_MANIFEST = ROOT / "k8s" / "overlays" / "prod" / "postgres-cluster.yaml"
OWNER = "user_service"
RUNTIME = "user_service_app"
DATABASE = "user_service"


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> LoopbackCertificate:
    # For the address 127.0.0.1 only: "localhost" reaches the same server under a name the
    # certificate does not carry.
    return loopback_certificate(tmp_path_factory.mktemp("db-tls"), dns_names=())


@pytest.fixture(scope="module")
def tls_server(certificate: LoopbackCertificate) -> Iterator[str]:
    """A server accepting TCP over TLS only; its superuser's URL."""
    with throwaway_postgres(tls=certificate) as url:
        yield url


def _verifying(url: str, mode: DatabaseSslMode, ca_file: Path, host: str = "127.0.0.1") -> DatabaseSettings:
    return DatabaseSettings(
        url=make_url(url).set(host=host).render_as_string(hide_password=False), ssl_mode=mode, ssl_root_cert=ca_file
    )


async def _server_version(settings: DatabaseSettings) -> str:
    engine = database_config(settings).get_engine()
    try:
        async with engine.connect() as connection:
            return str((await connection.execute(text("SHOW server_version"))).scalar_one())
    finally:
        await engine.dispose()


async def test_verify_full_connects_to_the_server_its_ca_signed(
    tls_server: str, certificate: LoopbackCertificate
) -> None:
    assert await _server_version(_verifying(tls_server, DatabaseSslMode.VERIFY_FULL, certificate.ca_file))


async def test_verify_full_refuses_a_certificate_another_ca_signed(tls_server: str, tmp_path: Path) -> None:
    stranger = loopback_certificate(tmp_path / "other-ca")
    with pytest.raises(Exception, match="certificate verify failed"):
        await _server_version(_verifying(tls_server, DatabaseSslMode.VERIFY_FULL, stranger.ca_file))


async def test_verify_full_refuses_a_host_name_the_certificate_does_not_carry(
    tls_server: str, certificate: LoopbackCertificate
) -> None:
    with pytest.raises(Exception, match="localhost"):
        await _server_version(_verifying(tls_server, DatabaseSslMode.VERIFY_FULL, certificate.ca_file, "localhost"))
    # verify-ca checks the chain and not the name: the same connection succeeds.
    assert await _server_version(_verifying(tls_server, DatabaseSslMode.VERIFY_CA, certificate.ca_file, "localhost"))


def test_a_root_certificate_without_a_verifying_mode_is_refused(certificate: LoopbackCertificate) -> None:
    with pytest.raises(ValueError, match="only read with USER_SERVICE_DB__SSL_MODE=verify-ca or verify-full"):
        DatabaseSettings(
            url="postgresql+asyncpg://u@h/d", ssl_mode=DatabaseSslMode.REQUIRE, ssl_root_cert=certificate.ca_file
        )


def test_an_unreadable_root_certificate_is_named(tmp_path: Path) -> None:
    settings = DatabaseSettings(
        url="postgresql+asyncpg://u@h/d", ssl_mode=DatabaseSslMode.VERIFY_FULL, ssl_root_cert=tmp_path / "missing.crt"
    )
    with pytest.raises(ValueError, match=r"USER_SERVICE_DB__SSL_ROOT_CERT: cannot load .*missing\.crt"):
        database_config(settings)


# --- roles -------------------------------------------------------------------------------


def _bootstrap_sql() -> list[str]:
    cluster = yaml.safe_load(CLUSTER_MANIFEST.read_text())
    statements: list[str] = cluster["spec"]["bootstrap"]["initdb"]["postInitApplicationSQL"]
    return statements


@pytest.fixture(scope="module")
def production_roles(tls_server: str, certificate: LoopbackCertificate) -> tuple[str, str]:
    """The database as CloudNativePG bootstraps it (owner, database, postInitApplicationSQL,
    then the managed role's login), migrated by the owner over verified TLS as the
    migration Job does; the owner's and the runtime role's URLs."""
    superuser = make_url(tls_server)
    owner = superuser.set(username=OWNER, database=DATABASE).render_as_string(hide_password=False)
    runtime = superuser.set(username=RUNTIME, database=DATABASE).render_as_string(hide_password=False)

    async def bootstrap() -> None:
        await _execute(
            superuser.set(database="postgres").render_as_string(hide_password=False),
            f"CREATE ROLE {OWNER} LOGIN",
            f"CREATE DATABASE {DATABASE} OWNER {OWNER}",
        )
        await _execute(
            superuser.set(database=DATABASE).render_as_string(hide_password=False),
            *_bootstrap_sql(),
            # What `managed.roles` adds to the role the SQL created (the password is the
            # Secret's; this server trusts 127.0.0.1).
            f"ALTER ROLE {RUNTIME} LOGIN NOINHERIT CONNECTION LIMIT 150",
        )

    anyio.run(bootstrap)
    migrate(owner, env={**os.environ, **_verify_full(certificate)})
    return owner, runtime


async def _execute(url: str, *statements: str) -> list[object]:
    """Each statement in its own transaction (CREATE DATABASE refuses to run in one); the
    first column of each one's first row, or None."""
    engine = create_async_engine(url, isolation_level="AUTOCOMMIT")
    results: list[object] = []
    try:
        async with engine.connect() as connection:
            for statement in statements:
                result = await connection.execute(text(statement))
                results.append(result.scalar() if result.returns_rows else None)
    finally:
        await engine.dispose()
    return results


def _verify_full(certificate: LoopbackCertificate) -> dict[str, str]:
    return {"USER_SERVICE_DB__SSL_MODE": "verify-full", "USER_SERVICE_DB__SSL_ROOT_CERT": str(certificate.ca_file)}


@pytest.mark.parametrize(
    "statement",
    [
        "CREATE TABLE intruder (id integer)",
        "DROP TABLE users",
        "ALTER TABLE users ADD COLUMN intruder text",
        "TRUNCATE users",
        "CREATE INDEX intruder ON users (username)",
    ],
)
async def test_the_runtime_role_cannot_change_the_schema(production_roles: tuple[str, str], statement: str) -> None:
    with pytest.raises(DBAPIError) as refused:
        await _execute(production_roles[1], statement)
    # 42501, insufficient_privilege: "permission denied for schema public", "must be owner
    # of table users"; not some other failure of the statement.
    assert getattr(refused.value.orig, "sqlstate", None) == "42501", refused.value


async def test_the_timeout_is_the_runtime_roles_and_not_the_owners(production_roles: tuple[str, str]) -> None:
    timeouts = [(await _execute(url, "SHOW statement_timeout"))[0] for url in production_roles]
    assert timeouts == ["0", "10s"]


def test_the_service_serves_as_the_runtime_role_over_verified_tls(
    production_roles: tuple[str, str], certificate: LoopbackCertificate, signing_key_file: Path, tmp_path: Path
) -> None:
    server = ServerProcess(
        database_url=production_roles[1],
        signing_key_file=signing_key_file,
        log_file=tmp_path / "server.log",
        **_verify_full(certificate),
    ).start()
    try:
        # Each step's writes land on tables the owner created.
        anyio.run(accounts_in_parallel, server.base_url, "runtime", 4)
        assert httpx.get(f"{server.base_url}/health/ready", timeout=10).status_code == 200
    finally:
        server.stop()
    assert "permission denied" not in server.output
