"""Domain errors: what business code raises when a request cannot be served.

Standard library only, so that use cases stay free of HTTP, metrics and database
types; app/web/problems.py turns each error into its RFC 9457 problem details.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar


@dataclass(frozen=True, slots=True)
class FieldError:
    field: str
    message: str


class DomainError(Exception):
    """Base of every error the service raises on purpose; ``kind`` names its problem type."""

    kind: ClassVar[str] = "error"
    title: ClassVar[str] = "Error"
    default_detail: ClassVar[str] = "The request could not be completed."

    def __init__(self, detail: str | None = None, *, errors: Sequence[FieldError] = ()) -> None:
        self.detail = detail or self.default_detail
        self.errors = tuple(errors)
        super().__init__(self.detail)


class InvalidInput(DomainError):
    """Well-formed input that breaks a rule (length, format, password policy)."""

    kind = "validation-error"
    title = "Invalid input"
    default_detail = "One or more fields are invalid."


class AlreadyRegistered(DomainError):
    """The username or email belongs to another account."""

    kind = "already-registered"
    title = "Already registered"
    default_detail = "An account with these details already exists."


class InvalidCredentials(DomainError):
    """Unknown user, wrong password or inactive account: deliberately indistinguishable."""

    kind = "invalid-credentials"
    title = "Invalid credentials"
    default_detail = "The username or password is incorrect."


class InvalidRefreshToken(DomainError):
    """Unknown, expired, revoked or already-used refresh token."""

    kind = "invalid-refresh-token"
    title = "Invalid refresh token"
    default_detail = "The refresh token is invalid, expired or revoked. Log in again."


class NotAuthenticated(DomainError):
    """No usable access token: missing, malformed, expired, or its session or user is gone."""

    kind = "not-authenticated"
    title = "Not authenticated"
    default_detail = "A valid bearer access token is required."


class PermissionDenied(DomainError):
    """The caller is authenticated but its role does not allow this."""

    kind = "permission-denied"
    title = "Permission denied"
    default_detail = "Your role does not allow this operation."


class UserNotFound(DomainError):
    """No live user with that id."""

    kind = "user-not-found"
    title = "User not found"
    default_detail = "No user with this id exists."


class SessionNotFound(DomainError):
    """No live session with that id among the caller's own."""

    kind = "session-not-found"
    title = "Session not found"
    default_detail = "You have no live session with this id."


class WrongCurrentPassword(DomainError):
    """A password change whose ``current_password`` does not match."""

    kind = "wrong-current-password"
    title = "Wrong current password"
    default_detail = "The current password is incorrect."


class InvalidAccountToken(DomainError):
    """A mailed link's token that is unknown, expired, used, of another purpose, or issued
    against an account state that has changed since (deliberately one answer)."""

    kind = "invalid-token"
    title = "Invalid or expired link"
    default_detail = "This link is invalid, has expired or has already been used. Ask for a new one."


class MailRequestsThrottled(DomainError):
    """Too many mails asked for one address: nobody can flood a mailbox through us."""

    kind = "mail-requests-throttled"
    title = "Too many requests for this address"
    default_detail = "Too many mails were requested for this address. Retry after the time given in Retry-After."

    def __init__(self, retry_after_seconds: int) -> None:
        super().__init__()
        self.retry_after_seconds = retry_after_seconds


class HashingCapacityExceeded(DomainError):
    """The password-hashing pool and its queue are full; the caller should retry shortly."""

    kind = "hashing-capacity-exceeded"
    title = "Busy"
    default_detail = "The service is at its password-hashing capacity. Retry shortly."

    def __init__(self, retry_after_seconds: int) -> None:
        super().__init__()
        self.retry_after_seconds = retry_after_seconds


class LoginThrottled(DomainError):
    """Too many failed logins for this account name: it is blocked for a while."""

    kind = "login-throttled"
    title = "Too many failed logins"
    default_detail = "Too many failed logins for this account. Retry after the time given in Retry-After."

    def __init__(self, retry_after_seconds: int) -> None:
        super().__init__()
        self.retry_after_seconds = retry_after_seconds


class PasswordChecksThrottled(DomainError):
    """Too many wrong current passwords for this account (a password change): blocked for
    a while, so that a stolen session cannot be used to guess the password."""

    kind = "password-checks-throttled"
    title = "Too many wrong passwords"
    default_detail = "Too many wrong current passwords for this account. Retry after the time given in Retry-After."

    def __init__(self, retry_after_seconds: int) -> None:
        super().__init__()
        self.retry_after_seconds = retry_after_seconds


class DependencyUnavailable(DomainError):
    """A backing service (the database) cannot be reached right now."""

    kind = "dependency-unavailable"
    title = "Service unavailable"
    default_detail = "A backing service is unavailable. Retry shortly."


def caused_by(exc: BaseException, kind: type[BaseException] | tuple[type[BaseException], ...]) -> bool:
    """Whether ``kind`` is ``exc`` or anywhere in its chain of causes and contexts."""
    return any(isinstance(link, kind) for link in causes(exc))


def causes(exc: BaseException) -> list[BaseException]:
    """``exc`` and every exception it was raised from or during, outermost first."""
    chain: list[BaseException] = []
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        chain.append(current)
        current = current.__cause__ or current.__context__
    return chain
