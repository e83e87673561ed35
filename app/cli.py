"""``litestar users ...``: operator commands that need the service's own rules."""

from __future__ import annotations

import os

import anyio
import click
from litestar import Litestar
from litestar.plugins import CLIPluginProtocol

from app.auth.password_policy import BreachedPasswordChecker
from app.auth.passwords import PasswordHasher
from app.auth.services import AuthService, Registration
from app.auth.tokens import TokenIssuer
from app.db.config import database_config
from app.db.models import Role
from app.errors import DomainError
from app.observability.events import SecurityEvents
from app.settings import Settings
from app.users.services import UserService

ADMIN_PASSWORD_ENV = "USER_SERVICE_ADMIN_PASSWORD"  # noqa: S105 - the variable's name


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
