"""Where the account use cases get their collaborators: built here, and only here, from
the request's database session and the service's container."""

from __future__ import annotations

from typing import Any

from litestar import Request
from litestar.di import NamedDependency
from sqlalchemy.ext.asyncio import AsyncSession

from app.accounts.account_tokens import AccountTokens
from app.accounts.audit import AuditTrail, RequestContext
from app.accounts.mails import AccountMails
from app.accounts.mfa import MfaLogin, SecondFactor
from app.accounts.mfa_challenges import LoginChallenges
from app.accounts.mfa_store import MfaStore
from app.accounts.notices import LoginNotices
from app.accounts.password_checks import CurrentPasswordCheck
from app.accounts.recovery import AccountRecovery, VerificationMailer
from app.accounts.repository import UserRepository
from app.accounts.services import AccountService
from app.accounts.sessions import ClientInfo, LoginSessions
from app.container import Container
from app.observability.logging import current_ids
from app.web.rate_limits import client_address


def account_mails(container: Container) -> AccountMails:
    return AccountMails(container.settings.mail)


def client_of(request: Request[Any, Any, Any]) -> ClientInfo:
    """The client as a session and the audit trail record it: its address (the forwarded
    one when the peer is a trusted proxy) and its User-Agent."""
    return ClientInfo.of(client_address(request), request.headers.get("user-agent"))


def audit_trail(db: AsyncSession, container: Container, request: Request[Any, Any, Any] | None = None) -> AuditTrail:
    """The audit trail on ``db``; with a request, its rows carry where it came from."""
    if request is None:
        return AuditTrail(db, on_written=container.events.audit_written)
    request_id, trace_id = current_ids()
    return AuditTrail(
        db,
        RequestContext.of(client_of(request), request_id, trace_id),
        on_written=container.events.audit_written,
        session_factory=container.database.get_session,
    )


def login_sessions(db: AsyncSession, container: Container) -> LoginSessions:
    tokens = container.settings.tokens
    return LoginSessions(db, tokens.refresh_ttl_seconds, tokens.session_max_age_seconds)


def _password_check(container: Container) -> CurrentPasswordCheck:
    return CurrentPasswordCheck(hasher=container.hasher, throttle=container.login_throttle, events=container.events)


def verification_mailer(db: AsyncSession, container: Container) -> VerificationMailer:
    return VerificationMailer(
        tokens=AccountTokens(db),
        mails=account_mails(container),
        mail_settings=container.settings.mail,
        token_settings=container.settings.tokens,
    )


def login_notices(container: Container) -> LoginNotices:
    settings = container.settings
    return LoginNotices(mails=account_mails(container), mail_settings=settings.mail, token_settings=settings.tokens)


def second_factor(db: AsyncSession, container: Container, audit: AuditTrail) -> SecondFactor:
    return SecondFactor(
        db=db,
        users=UserRepository(session=db),
        store=MfaStore(db),
        box=container.mfa_box,
        password_check=_password_check(container),
        throttle=container.login_throttle,
        events=container.events,
        settings=container.settings.mfa,
        audit=audit,
    )


def mfa_login(db: AsyncSession, container: Container, request: Request[Any, Any, Any] | None = None) -> MfaLogin:
    settings = container.settings
    audit = audit_trail(db, container, request)
    return MfaLogin(
        db=db,
        users=UserRepository(session=db),
        store=MfaStore(db),
        factor=second_factor(db, container, audit),
        sessions=login_sessions(db, container),
        tokens=container.tokens,
        events=container.events,
        notices=login_notices(container) if settings.mail.new_login_notice else None,
        audit=audit,
    )


def account_service(
    db: AsyncSession,
    container: Container,
    *,
    send_verification: bool = True,
    request: Request[Any, Any, Any] | None = None,
) -> AccountService:
    """The account use cases on ``db`` (the API's per-request session, or the CLI's own).
    ``send_verification``: registration mails a verification link (the API does; an
    operator's CLI, which makes verified accounts or seeds test data, does not)."""
    settings = container.settings
    audit = audit_trail(db, container, request)
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
        password_check=_password_check(container),
        verification=verification_mailer(db, container) if send_verification else None,
        notices=login_notices(container) if settings.mail.new_login_notice else None,
        audit=audit,
        challenges=LoginChallenges(MfaStore(db), settings.mfa.challenge_ttl_seconds),
        second_factor=second_factor(db, container, audit),
    )


def account_recovery(
    db: AsyncSession, container: Container, request: Request[Any, Any, Any] | None = None
) -> AccountRecovery:
    settings = container.settings
    tokens = AccountTokens(db)
    audit = audit_trail(db, container, request)
    return AccountRecovery(
        db=db,
        users=UserRepository(session=db),
        sessions=login_sessions(db, container),
        tokens=tokens,
        mails=account_mails(container),
        verification=verification_mailer(db, container),
        password_check=_password_check(container),
        second_factor=second_factor(db, container, audit),
        hasher=container.hasher,
        throttle=container.login_throttle,
        events=container.events,
        mail_settings=settings.mail,
        token_settings=settings.tokens,
        password_settings=settings.passwords,
        breach_checker=container.breach_checker,
        audit=audit,
    )


def provide_account_service(
    db_session: NamedDependency[AsyncSession], container: NamedDependency[Container], request: Request[Any, Any, Any]
) -> AccountService:
    return account_service(db_session, container, request=request)


def provide_account_recovery(
    db_session: NamedDependency[AsyncSession], container: NamedDependency[Container], request: Request[Any, Any, Any]
) -> AccountRecovery:
    return account_recovery(db_session, container, request)


def provide_second_factor(
    db_session: NamedDependency[AsyncSession], container: NamedDependency[Container], request: Request[Any, Any, Any]
) -> SecondFactor:
    return second_factor(db_session, container, audit_trail(db_session, container, request))


def provide_mfa_login(
    db_session: NamedDependency[AsyncSession], container: NamedDependency[Container], request: Request[Any, Any, Any]
) -> MfaLogin:
    return mfa_login(db_session, container, request)
