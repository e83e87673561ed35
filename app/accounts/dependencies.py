"""Where the account use cases get their collaborators: built here, and only here, from
the request's database session and the service's container."""

from __future__ import annotations

from litestar.di import NamedDependency
from sqlalchemy.ext.asyncio import AsyncSession

from app.accounts.repository import UserRepository
from app.accounts.services import AccountService
from app.accounts.sessions import LoginSessions
from app.container import Container


def login_sessions(db: AsyncSession, container: Container) -> LoginSessions:
    tokens = container.settings.tokens
    return LoginSessions(db, tokens.refresh_ttl_seconds, tokens.session_max_age_seconds)


def account_service(db: AsyncSession, container: Container) -> AccountService:
    """The account use cases on ``db`` (the API's per-request session, or the CLI's own)."""
    settings = container.settings
    return AccountService(
        db=db,
        users=UserRepository(session=db),
        sessions=login_sessions(db, container),
        hasher=container.hasher,
        tokens=container.tokens,
        password_settings=settings.passwords,
        breach_checker=container.breach_checker,
        events=container.events,
        throttle=container.login_throttle,
    )


def provide_account_service(
    db_session: NamedDependency[AsyncSession], container: NamedDependency[Container]
) -> AccountService:
    return account_service(db_session, container)
