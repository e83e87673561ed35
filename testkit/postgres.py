"""A throwaway PostgreSQL server for the test session, from the machine's server package.

Used when TEST_DATABASE_URL is not set. ``initdb`` refuses to run as root, so as root
the server runs as the ``postgres`` system user (created by Debian's package).
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

from testkit.ports import free_port

DATABASE = "user_service_test"


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
def throwaway_postgres() -> Iterator[str]:
    """Start a server in a temporary folder; yield its asyncpg URL; stop and delete it."""
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
