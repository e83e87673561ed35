"""A rollback after a migration (issue 19): this release's replicas against the schema of
the next release, and back.

The next release is simulated by a copy of this release's migrations with one more
revision (0011), applied by Alembic exactly as its migration Job would. An expand-only
revision must leave this release serving (the previous release's pods keep restarting,
rescheduling and scaling during and after a rollout); a contract revision must keep it
from starting, with the reason on its startup probe, until the schema is downgraded.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import anyio
import httpx
import pytest
from alembic import command
from alembic.config import Config
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine

from app.db.config import MIGRATIONS_DIR
from testkit.postgres import migrate
from testkit.server_process import LITESTAR_CLI, ROOT, ServerProcess
from tests.integration.faults import LOGIN, REGISTER, register_body
from tests.integration.helpers import PASSWORD

THIS_RELEASE_HEAD = "0010"

NEXT_RELEASE = '''"""the next release's migration, for the rollback test"""
import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None
backward_compatible = {compatible}


def upgrade():
    op.create_table("next_release_notes", sa.Column("id", sa.Integer(), primary_key=True))
    if not backward_compatible:
        # A contract step: a NOT NULL column this release never writes, so its
        # registrations would fail.
        op.add_column("users", sa.Column("next_release_required", sa.String(8), nullable=False))


def downgrade():
    if not backward_compatible:
        op.drop_column("users", "next_release_required")
    op.drop_table("next_release_notes")
'''


def next_release_migrations(tmp_path: Path, *, compatible: bool) -> Path:
    copy = tmp_path / f"migrations-{'expand' if compatible else 'contract'}"
    shutil.copytree(MIGRATIONS_DIR, copy, ignore=shutil.ignore_patterns("__pycache__"))
    (copy / "versions" / "0011_next_release.py").write_text(NEXT_RELEASE.format(compatible=compatible))
    return copy


def alembic(database_url: str, migrations: Path, action: str, revision: str) -> None:
    """The next release's migration Job (or an operator's downgrade), through the same env.py."""

    def run(connection: Connection) -> None:
        config = Config()
        config.set_main_option("script_location", str(migrations))
        config.attributes["connection"] = connection
        getattr(command, action)(config, revision)

    async def on_the_database() -> None:
        engine = create_async_engine(database_url)
        try:
            async with engine.begin() as connection:
                await connection.run_sync(run)
        finally:
            await engine.dispose()

    anyio.run(on_the_database)


def schema_cli(server: ServerProcess, command_name: str) -> subprocess.CompletedProcess[str]:
    """``litestar schema <command>`` as the migration Job or an operator runs it."""
    return subprocess.run(
        [*LITESTAR_CLI, "schema", command_name],
        cwd=ROOT,
        env=server.env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def startup(server: ServerProcess) -> httpx.Response:
    return httpx.get(f"{server.base_url}/health/startup", timeout=5)


def wait_for(condition: Callable[[], bool], seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if condition():
                return True
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    return False


def registers_and_logs_in(server: ServerProcess, name: str) -> None:
    with httpx.Client(base_url=server.base_url, timeout=30) as client:
        registered = client.post(REGISTER, json=register_body(name))
        assert registered.status_code == 201, registered.text
        login = client.post(LOGIN, json={"username": name, "password": PASSWORD})
        assert login.status_code == 200, login.text


@pytest.fixture
def this_release(fresh_database: str, signing_key_file: Path, tmp_path: Path) -> Iterator[ServerProcess]:
    """This release's service (not started) on a database of its own at this release's head."""
    server = ServerProcess(database_url=fresh_database, signing_key_file=signing_key_file, log_file=tmp_path / "s.log")
    migrate(fresh_database, env=server.env)
    try:
        yield server
    finally:
        server.stop()


def test_this_release_serves_a_schema_one_expand_step_ahead_and_back(
    this_release: ServerProcess, fresh_database: str, tmp_path: Path
) -> None:
    migrations = next_release_migrations(tmp_path, compatible=True)
    alembic(fresh_database, migrations, "upgrade", "0011")
    # The rollback's migration Job: nothing to do, and it says why instead of failing on a
    # revision it has no file for.
    job = schema_cli(this_release, "migrate")
    assert job.returncode == 0, job.stderr
    assert "ahead of this release" in job.stdout, job.stdout
    # A replica of this release starts (as a restarted, rescheduled or scaled-up pod does
    # during the rollback) and serves reads and writes.
    this_release.start()
    registers_and_logs_in(this_release, "rolledback")
    assert "schema_ahead_of_release" in this_release.output
    # ... and the schema can go back to this release's head under it.
    alembic(fresh_database, migrations, "downgrade", THIS_RELEASE_HEAD)
    assert schema_cli(this_release, "status").returncode == 0
    registers_and_logs_in(this_release, "afterdowngrade")


def test_this_release_refuses_a_contracted_schema_until_it_is_downgraded(
    this_release: ServerProcess, fresh_database: str, tmp_path: Path
) -> None:
    migrations = next_release_migrations(tmp_path, compatible=False)
    alembic(fresh_database, migrations, "upgrade", "0011")
    refused = schema_cli(this_release, "migrate")
    assert refused.returncode != 0
    said = " ".join(re.sub("[│╭╮╰╯─]", " ", refused.stderr).split())  # rich's error box, unwrapped
    assert "ahead of this release (0010) and not compatible with it" in said, said
    # The replica runs but never reports started: its startup probe says why, so the
    # rollout stalls on it while the running pods keep serving.
    this_release.start_unchecked()
    assert wait_for(lambda: startup(this_release).status_code == 503 and "0011" in startup(this_release).text, 30)
    problem = startup(this_release).json()
    assert "ahead of this release (0010) and not compatible with it" in problem["detail"], problem
    assert "it needs code at revision 0011 or newer" in problem["detail"], problem
    # Downgraded to this release's head, the same process starts by itself.
    alembic(fresh_database, migrations, "downgrade", THIS_RELEASE_HEAD)
    assert wait_for(lambda: startup(this_release).status_code == 200, 30), this_release.output[-3000:]
    registers_and_logs_in(this_release, "afterrefusal")
