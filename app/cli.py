"""``litestar users ...``, ``litestar mail ...`` and ``litestar schema ...``: operator
commands that need the service's own rules."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Awaitable, Callable
from pathlib import Path

import anyio
import click
from litestar import Litestar
from litestar.plugins import CLIPluginProtocol
from prometheus_client import start_http_server
from sqlalchemy.ext.asyncio import AsyncEngine

from app.accounts.dependencies import account_service
from app.accounts.seeding import DEFAULT_BATCH_SIZE, DEFAULT_PREFIX, seed_users
from app.accounts.services import Registration
from app.container import Container, container_of
from app.db.migrate import SchemaFit, SchemaState, schema_state, upgrade_to_head
from app.db.models import Role
from app.errors import DomainError
from app.identity.calibration import calibrate
from app.mail.transports import warn_if_mail_reaches_nobody
from app.settings import Environment

ADMIN_PASSWORD_ENV = "USER_SERVICE_ADMIN_PASSWORD"  # noqa: S105 - the variable's name
SEED_PASSWORD_ENV = "USER_SERVICE_SEED_PASSWORD"  # noqa: S105 - the variable's name


async def create_admin(container: Container, *, username: str, email: str, password: str) -> str:
    """Register an account through the normal rules, as a verified admin. Returns its id."""
    await container.hasher.start()
    try:
        async with container.database.get_session() as db:
            accounts = account_service(db, container)
            registration = Registration(username=username, email=email, password=password)
            user = await accounts.register(registration, role=Role.ADMIN, verified=True)
            return str(user.id)
    finally:
        container.hasher.shutdown()
        await container.breach_checker.aclose()
        await container.database.get_engine().dispose()


async def deliver_mail_until_stopped(container: Container) -> None:
    """The outbox worker alone, until SIGTERM or SIGINT; the mail being sent then is
    finished and marked before the process exits."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    # Said once SIGTERM is handled, not before: a SIGTERM right after this line must stop
    # the worker cleanly, not kill the process (a race the suite once lost under load).
    click.echo("delivering the mail outbox until SIGTERM")
    try:
        await container.outbox_worker().run(stop)
    finally:
        await container.database.get_engine().dispose()
        container.observability.shutdown()


def _explain(exc: DomainError) -> click.ClickException:
    details = "; ".join(f"{e.field}: {e.message}" for e in exc.errors) or exc.detail
    return click.ClickException(f"{exc.title}: {details}")


class UserAdminCLIPlugin(CLIPluginProtocol):
    def on_cli_init(self, cli: click.Group) -> None:
        @cli.group(name="users", help="Manage user accounts.")
        def users() -> None: ...

        @users.command(name="calibrate-hashing")
        @click.option("--repeat", default=20, show_default=True, help="Hashes and verifies to time.")
        def calibrate_hashing_command(app: Litestar, repeat: int) -> None:
            """Time argon2 at the configured parameters here; print the login ceiling."""
            click.echo(calibrate(container_of(app).settings.passwords, repeat=repeat).report())

        @users.command(name="create-admin")
        @click.option("--username", required=True, help="Username of the new admin.")
        @click.option("--email", required=True, help="Email of the new admin.")
        def create_admin_command(app: Litestar, username: str, email: str) -> None:
            """Create an admin account. The password comes from $USER_SERVICE_ADMIN_PASSWORD or a prompt, never argv."""
            password = os.environ.get(ADMIN_PASSWORD_ENV)
            if not password:
                password = click.prompt("Password", hide_input=True, confirmation_prompt=True)
            container = container_of(app)
            try:
                user_id = anyio.run(lambda: create_admin(container, username=username, email=email, password=password))
            except DomainError as exc:
                raise _explain(exc) from exc
            click.echo(f"created admin {username} ({user_id})")

        @users.command(name="seed")
        @click.option("--count", type=click.IntRange(min=1), required=True, help="How many users.")
        @click.option("--prefix", default=DEFAULT_PREFIX, show_default=True, help="Usernames are PREFIX000001...")
        @click.option(
            "--password-file",
            type=click.Path(exists=True, dir_okay=False, path_type=Path),
            help=f"File holding the users' password (else ${SEED_PASSWORD_ENV}, else a prompt).",
        )
        @click.option("--batch-size", type=click.IntRange(min=1), default=DEFAULT_BATCH_SIZE, show_default=True)
        @click.option(
            "--with-totp",
            is_flag=True,
            help="Give each a TOTP second factor derived from the password and username (load tests only).",
        )
        def seed_command(
            app: Litestar, count: int, prefix: str, password_file: Path | None, batch_size: int, with_totp: bool
        ) -> None:
            """Insert COUNT load-test users sharing one password (hashed once); reruns add only what is missing."""
            if password_file is not None:
                password = password_file.read_text(encoding="utf-8").rstrip("\r\n")
            else:
                password = os.environ.get(SEED_PASSWORD_ENV) or click.prompt("Password", hide_input=True)
            container = container_of(app)
            try:
                result = anyio.run(
                    lambda: seed_users(
                        container,
                        count=count,
                        password=password,
                        prefix=prefix,
                        batch_size=batch_size,
                        with_totp=with_totp,
                    )
                )
            except DomainError as exc:
                raise _explain(exc) from exc
            click.echo(
                f"seeded {result.requested} users {prefix}{1:06d}..{prefix}{count:06d}: {result.inserted} new, "
                f"{result.already_present} already present, in {result.total_seconds:.2f} s "
                f"(one argon2 hash: {result.hash_seconds:.3f} s)"
                + (f"; {result.second_factors} TOTP factors added" if with_totp else "")
            )


class MailCLIPlugin(CLIPluginProtocol):
    def on_cli_init(self, cli: click.Group) -> None:
        @cli.group(name="mail", help="The outgoing-mail outbox.")
        def mail() -> None: ...

        @mail.command(name="deliver")
        @click.option(
            "--metrics-port",
            type=click.IntRange(min=0, max=65535),
            default=None,
            help="Serve this worker's Prometheus metrics (outbox depth and age, deliveries) on this port.",
        )
        def deliver_command(app: Litestar, metrics_port: int | None) -> None:
            """Deliver the outbox until SIGTERM, for a deployment with USER_SERVICE_MAIL__WORKER_ENABLED=false."""
            container = container_of(app)
            if container.settings.db.is_embedded:
                # SQLite has no row locks to share the work: the service process delivers.
                raise click.ClickException("the embedded SQLite database is delivered by the service process itself")
            metrics = container.observability.metrics
            if metrics_port is not None and metrics is not None:
                start_http_server(metrics_port, addr="0.0.0.0", registry=metrics.registry)  # noqa: S104 - scraped by Prometheus  # nosec B104
            if container.settings.environment is Environment.PRODUCTION:
                warn_if_mail_reaches_nobody(container.settings.mail)
            asyncio.run(deliver_mail_until_stopped(container))


async def _on_database(container: Container, step: Callable[[AsyncEngine], Awaitable[SchemaState]]) -> SchemaState:
    """One schema step on the service's engine, closed afterwards (the CLI's loop ends)."""
    engine = container.database.get_engine()
    try:
        return await step(engine)
    finally:
        await engine.dispose()


class SchemaCLIPlugin(CLIPluginProtocol):
    def on_cli_init(self, cli: click.Group) -> None:
        @cli.group(name="schema", help="The database schema against this release's migrations.")
        def schema() -> None: ...

        @schema.command(name="migrate")
        def migrate_command(app: Litestar) -> None:
            """Upgrade to this release's head (the migration Job's command). A schema already
            ahead of this release, by revisions that only expand it, is left as it is: that
            is a rollback, and this release serves it. Fails on a schema this release cannot
            serve (a newer release contracted it)."""
            _report(asyncio.run(_on_database(container_of(app), upgrade_to_head)))

        @schema.command(name="status")
        def status_command(app: Litestar) -> None:
            """Whether this release can serve the database's schema; exit 1 when it cannot."""
            _report(asyncio.run(_on_database(container_of(app), schema_state)))


def _report(state: SchemaState) -> None:
    database, release = ", ".join(state.database_heads) or "empty", ", ".join(state.code_heads)
    if state.fit is SchemaFit.CURRENT:
        click.echo(f"schema at this release's head ({release})")
    elif state.fit is SchemaFit.AHEAD_COMPATIBLE:
        click.echo(
            f"schema ({database}) ahead of this release ({release}); compatible with releases from "
            f"{state.oldest_compatible} on, so this release serves it unchanged"
        )
    else:
        raise click.ClickException(state.problem or f"schema {database} does not fit this release ({release})")
