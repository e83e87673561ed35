"""A throwaway PgBouncer (Debian's ``pgbouncer``) in front of a test database, in the pool
mode production uses (transaction), with fewer server connections than the service's pool
so that every server connection is shared between clients, as behind a real pooler."""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from sqlalchemy.engine import make_url

from testkit.ports import free_port

PGBOUNCER = "/usr/sbin/pgbouncer"
POOLED_DATABASE = "pooled"


def available() -> bool:
    return Path(PGBOUNCER).exists() or shutil.which("pgbouncer") is not None


@contextlib.contextmanager
def throwaway_pgbouncer(database_url: str, *, server_connections: int = 2) -> Iterator[str]:
    """Yield the asyncpg URL of database ``pooled`` on a PgBouncer that forwards to the
    database of ``database_url`` with ``server_connections`` server connections at most."""
    target = make_url(database_url)
    workdir = Path(tempfile.mkdtemp(prefix="user-service-pgbouncer-"))
    port = free_port()
    user = target.username or "postgres"
    (workdir / "users.txt").write_text(f'"{user}" ""\n')
    (workdir / "pgbouncer.ini").write_text(
        "\n".join(
            [
                "[databases]",
                f"{POOLED_DATABASE} = host={target.host} port={target.port} dbname={target.database}",
                "[pgbouncer]",
                "listen_addr = 127.0.0.1",
                f"listen_port = {port}",
                f"unix_socket_dir = {workdir}",
                "auth_type = trust",
                f"auth_file = {workdir / 'users.txt'}",
                "pool_mode = transaction",
                f"default_pool_size = {server_connections}",
                "max_client_conn = 200",
                f"logfile = {workdir / 'pgbouncer.log'}",
                f"pidfile = {workdir / 'pgbouncer.pid'}",
                "",
            ]
        )
    )
    command = [shutil.which("pgbouncer") or PGBOUNCER, str(workdir / "pgbouncer.ini")]
    if os.geteuid() == 0:
        # PgBouncer refuses to run as root; the postgres package's user runs it.
        owner = pwd.getpwnam("postgres")
        for path in (workdir, *workdir.iterdir()):
            os.chown(path, owner.pw_uid, owner.pw_gid)
        command = ["runuser", "-u", "postgres", "--", *command]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        _wait_for_port(port, process, workdir)
        yield target.set(host="127.0.0.1", port=port, database=POOLED_DATABASE).render_as_string(hide_password=False)
    finally:
        process.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=10)
        if process.poll() is None:
            process.kill()
        shutil.rmtree(workdir, ignore_errors=True)


def _wait_for_port(port: int, process: subprocess.Popen[bytes], workdir: Path) -> None:
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if process.poll() is not None:
            log = (
                (workdir / "pgbouncer.log").read_text(errors="replace") if (workdir / "pgbouncer.log").exists() else ""
            )
            output = process.stdout.read().decode(errors="replace") if process.stdout else ""
            raise RuntimeError(f"pgbouncer exited with {process.returncode}:\n{output}\n{log}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return
        time.sleep(0.1)
    raise RuntimeError("pgbouncer did not listen within 15 s")
