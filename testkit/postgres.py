"""PostgreSQL for the tests and the load tests: a throwaway server from the machine's server
package, and the schema from the service's own migration command.

The throwaway server is used when the caller names no database (TEST_DATABASE_URL,
LOADTEST_DATABASE_URL). ``initdb`` refuses to run as root, so as root the server runs as
the ``postgres`` system user (created by Debian's package).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from testkit.ports import free_port
from testkit.server_process import LITESTAR_CLI, ROOT
from testkit.tls import LoopbackCertificate

DATABASE = "user_service_test"
MIGRATE_TIMEOUT_SECONDS = 120.0


class MigrationFailed(RuntimeError):
    """``litestar schema migrate`` exited non-zero; the message ends with its output."""


def _bindir() -> Path:
    if from_env := os.environ.get("PG_BINDIR"):
        return Path(from_env)
    if pg_config := shutil.which("pg_config"):
        candidate = Path(
            subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, check=True).stdout.strip()
        )
        if (candidate / "initdb").exists():
            return candidate
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parent.parent.name))
    if versions:
        return versions[-1].parent
    if initdb := shutil.which("initdb"):
        return Path(initdb).resolve().parent
    raise RuntimeError(
        "No PostgreSQL server found: install it (Debian: apt-get install postgresql) or set TEST_DATABASE_URL"
    )


@contextlib.contextmanager
def throwaway_postgres(tls: LoopbackCertificate | None = None) -> Iterator[str]:
    """Start a server in a temporary folder; yield its asyncpg URL; stop and delete it.

    With ``tls`` the server presents that certificate and accepts TCP connections over TLS
    only (pg_hba.conf: hostssl), so a client that connected did use TLS."""
    bindir = _bindir()
    as_root = os.geteuid() == 0
    prefix = ["runuser", "-u", "postgres", "--"] if as_root else []
    workdir = Path(tempfile.mkdtemp(prefix="user-service-pg-"))
    data = workdir / "data"
    if as_root:
        owner = pwd.getpwnam("postgres")
        os.chown(workdir, owner.pw_uid, owner.pw_gid)
    port = free_port()

    def run(*args: str) -> None:
        subprocess.run([*prefix, *args], check=True, capture_output=True, text=True)

    try:
        run(
            str(bindir / "initdb"),
            "-D",
            str(data),
            "--auth=trust",
            "--username=postgres",
            "--encoding=UTF8",
            "--no-sync",
        )
        # Durability off: the data dies with the test run, and fsyncs would dominate its time.
        options = " ".join(
            [
                *(f"-p {port}", f"-k {workdir}", "-c listen_addresses=127.0.0.1", "-c max_connections=200"),
                *("-c fsync=off", "-c synchronous_commit=off", "-c full_page_writes=off"),
                *(_tls_options(tls, data) if tls is not None else ()),
            ]
        )
        run(
            str(bindir / "pg_ctl"),
            "-D",
            str(data),
            "-o",
            options,
            "-l",
            str(workdir / "server.log"),
            "-w",
            "-t",
            "30",
            "start",
        )
        run(
            str(bindir / "psql"),
            "-h",
            "127.0.0.1",
            "-p",
            str(port),
            "-U",
            "postgres",
            "-qc",
            f"CREATE DATABASE {DATABASE}",
        )
        yield f"postgresql+asyncpg://postgres@127.0.0.1:{port}/{DATABASE}"
    finally:
        with contextlib.suppress(subprocess.CalledProcessError, FileNotFoundError):
            run(str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(workdir, ignore_errors=True)


def _tls_options(tls: LoopbackCertificate, data: Path) -> tuple[str, ...]:
    """Server options for TLS with ``tls``'s certificate, copied into the data folder: the
    server insists that its key belongs to its own user and is readable by nobody else."""
    for name, source in (("server.crt", tls.cert_file), ("server.key", tls.key_file)):
        target = data / name
        shutil.copyfile(source, target)
        target.chmod(0o600)
        if os.geteuid() == 0:
            owner = pwd.getpwnam("postgres")
            os.chown(target, owner.pw_uid, owner.pw_gid)
    (data / "pg_hba.conf").write_text("local all all trust\nhostssl all all 127.0.0.1/32 trust\n")
    return ("-c ssl=on", "-c ssl_cert_file=server.crt", "-c ssl_key_file=server.key")


def existing_or_throwaway(url: str | None) -> contextlib.AbstractContextManager[str]:
    """``url`` when the caller names a database (left as it is on exit), else a throwaway server."""
    return contextlib.nullcontext(url) if url else throwaway_postgres()


def migrate(
    url: str,
    *,
    drop_first: bool = False,
    env: Mapping[str, str] | None = None,
    timeout: float = MIGRATE_TIMEOUT_SECONDS,
) -> None:
    """Bring the database at ``url`` to the newest revision with the command production runs,
    ``litestar schema migrate``; raises MigrationFailed if it fails.

    ``drop_first`` drops the public schema (every table, whatever revision left it) first:
    only for a disposable database. ``env`` is the command's environment (by default this
    process's); the database URL and ``USER_SERVICE_ENVIRONMENT=test`` are set on top of it.
    """
    if drop_first:
        _drop_public_schema(url)
    result = subprocess.run(
        [*LITESTAR_CLI, "schema", "migrate"],
        cwd=ROOT,
        env={**(os.environ if env is None else env), "USER_SERVICE_DB__URL": url, "USER_SERVICE_ENVIRONMENT": "test"},
        input="",
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if result.returncode != 0:
        raise MigrationFailed(
            f"litestar schema migrate failed ({result.returncode}):\n{result.stdout[-2000:]}{result.stderr[-2000:]}"
        )


def _drop_public_schema(url: str) -> None:
    async def drop() -> None:
        engine = create_async_engine(url)
        try:
            async with engine.begin() as conn:
                await conn.execute(text("DROP SCHEMA public CASCADE"))
                await conn.execute(text("CREATE SCHEMA public"))
        finally:
            await engine.dispose()

    asyncio.run(drop())
