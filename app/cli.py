"""``litestar users ...``: operator commands that need the service's own rules."""

from __future__ import annotations

import os
from pathlib import Path

import anyio
import click
from litestar import Litestar
from litestar.plugins import CLIPluginProtocol

from app.auth.calibration import calibrate
from app.auth.password_policy import BreachedPasswordChecker
from app.auth.passwords import PasswordHasher
from app.auth.services import AuthService, Registration
from app.auth.throttle import DatabaseThrottleStore, LoginThrottle
from app.auth.tokens import TokenIssuer
from app.db.config import database_config
from app.db.models import Role
from app.errors import DomainError
from app.observability.events import SecurityEvents
from app.settings import Settings
from app.users.seeding import DEFAULT_BATCH_SIZE, DEFAULT_PREFIX, seed_users
from app.users.services import UserService

ADMIN_PASSWORD_ENV = "USER_SERVICE_ADMIN_PASSWORD"  # noqa: S105 - the variable's name
SEED_PASSWORD_ENV = "USER_SERVICE_SEED_PASSWORD"  # noqa: S105 - the variable's name


async def create_admin(settings: Settings, *, username: str, email: str, password: str) -> str:
    """Register an account through the normal rules, then make it an admin. Returns its id."""
    db_config = database_config(settings.db, settings.service_name)
    hasher = PasswordHasher(settings.passwords)
    breach_checker = BreachedPasswordChecker(settings.passwords)
    await hasher.start()
    try:
        async with db_config.get_session() as db:
            users = UserService(session=db)
            auth = AuthService(
                db=db,
                users=users,
                hasher=hasher,
                tokens=TokenIssuer(settings.tokens),
                password_settings=settings.passwords,
                breach_checker=breach_checker,
                refresh_ttl_seconds=settings.tokens.refresh_ttl_seconds,
                events=SecurityEvents(metrics=None),
                throttle=LoginThrottle(
                    DatabaseThrottleStore(db_config.get_engine(), settings.login_throttle), settings.login_throttle
                ),
            )
            user = await auth.register(Registration(username=username, email=email, password=password))
            user.role = Role.ADMIN
            user.is_verified = True
            await db.commit()
            return str(user.id)
    finally:
        hasher.shutdown()
        await breach_checker.aclose()
        await db_config.get_engine().dispose()


class UserAdminCLIPlugin(CLIPluginProtocol):
    def on_cli_init(self, cli: click.Group) -> None:
        @cli.group(name="users", help="Manage user accounts.")
        def users() -> None: ...

        @users.command(name="calibrate-hashing")
        @click.option("--repeat", default=20, show_default=True, help="Hashes and verifies to time.")
        def calibrate_hashing_command(app: Litestar, repeat: int) -> None:
            """Time argon2 at the configured parameters here; print the login ceiling."""
            settings: Settings = app.state.settings
            click.echo(calibrate(settings.passwords, repeat=repeat).report())

        @users.command(name="create-admin")
        @click.option("--username", required=True, help="Username of the new admin.")
        @click.option("--email", required=True, help="Email of the new admin.")
        def create_admin_command(app: Litestar, username: str, email: str) -> None:
            """Create an admin account. The password comes from $USER_SERVICE_ADMIN_PASSWORD or a prompt, never argv."""
            password = os.environ.get(ADMIN_PASSWORD_ENV)
            if not password:
                password = click.prompt("Password", hide_input=True, confirmation_prompt=True)
            settings: Settings = app.state.settings
            try:
                user_id = anyio.run(lambda: create_admin(settings, username=username, email=email, password=password))
            except DomainError as exc:
                details = "; ".join(f"{e.field}: {e.message}" for e in exc.errors) or exc.detail
                raise click.ClickException(f"{exc.title}: {details}") from exc
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
        def seed_command(app: Litestar, count: int, prefix: str, password_file: Path | None, batch_size: int) -> None:
            """Insert COUNT load-test users sharing one password (hashed once); reruns add only what is missing."""
            if password_file is not None:
                password = password_file.read_text(encoding="utf-8").rstrip("\r\n")
            else:
                password = os.environ.get(SEED_PASSWORD_ENV) or click.prompt("Password", hide_input=True)
            settings: Settings = app.state.settings
            try:
                result = anyio.run(
                    lambda: seed_users(settings, count=count, password=password, prefix=prefix, batch_size=batch_size)
                )
            except DomainError as exc:
                details = "; ".join(f"{e.field}: {e.message}" for e in exc.errors) or exc.detail
                raise click.ClickException(f"{exc.title}: {details}") from exc
            click.echo(
                f"seeded {result.requested} users {prefix}{1:06d}..{prefix}{count:06d}: {result.inserted} new, "
                f"{result.already_present} already present, in {result.total_seconds:.2f} s "
                f"(one argon2 hash: {result.hash_seconds:.3f} s)"
            )
