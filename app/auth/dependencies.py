"""Dependency providers for the auth feature."""

from __future__ import annotations

from collections.abc import AsyncGenerator

from litestar.datastructures import State
from litestar.di import NamedDependency
from sqlalchemy.ext.asyncio import AsyncSession

from app.auth.password_policy import BreachedPasswordChecker
from app.auth.passwords import PasswordHasher
from app.auth.services import AuthService
from app.auth.sessions import LoginSessions
from app.auth.tokens import TokenIssuer
from app.settings import Settings
from app.users.administration import UserAdministration
from app.users.services import UserService


async def provide_users_service(db_session: NamedDependency[AsyncSession]) -> AsyncGenerator[UserService, None]:
    async with UserService.new(session=db_session) as service:
        yield service


def provide_user_administration(
    db_session: NamedDependency[AsyncSession], users_service: NamedDependency[UserService], state: State
) -> UserAdministration:
    settings: Settings = state.settings
    sessions = LoginSessions(db_session, settings.tokens.refresh_ttl_seconds)
    return UserAdministration(users_service, sessions, state.events)


def provide_auth_service(
    db_session: NamedDependency[AsyncSession], users_service: NamedDependency[UserService], state: State
) -> AuthService:
    settings: Settings = state.settings
    hasher: PasswordHasher = state.password_hasher
    tokens: TokenIssuer = state.token_issuer
    breach_checker: BreachedPasswordChecker = state.breach_checker
    return AuthService(
        db=db_session,
        users=users_service,
        hasher=hasher,
        tokens=tokens,
        password_settings=settings.passwords,
        breach_checker=breach_checker,
        refresh_ttl_seconds=settings.tokens.refresh_ttl_seconds,
        events=state.events,
        throttle=state.login_throttle,
    )
