"""Where user administration gets its collaborators: the request's session and the
container, through the accounts feature's own builders."""

from __future__ import annotations

from typing import Any

from litestar import Request
from litestar.di import NamedDependency
from sqlalchemy.ext.asyncio import AsyncSession

from app.accounts.account_tokens import AccountTokens
from app.accounts.dependencies import account_mails, audit_trail, login_sessions
from app.accounts.repository import UserRepository
from app.admin.services import UserAdministration
from app.container import Container


def provide_user_administration(
    db_session: NamedDependency[AsyncSession], container: NamedDependency[Container], request: Request[Any, Any, Any]
) -> UserAdministration:
    return UserAdministration(
        db=db_session,
        users=UserRepository(session=db_session),
        sessions=login_sessions(db_session, container),
        account_tokens=AccountTokens(db_session),
        events=container.events,
        mails=account_mails(container),
        mail_settings=container.settings.mail,
        audit=audit_trail(db_session, container, request),
    )
