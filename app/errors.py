"""Domain errors: what business code raises when a request cannot be served.

Standard library only, so that use cases stay free of HTTP, metrics and database
types; app/web/problems.py turns each error into its RFC 9457 problem details.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
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

    @property
    def extensions(self) -> Mapping[str, str]:
        """Extension members of its problem details (RFC 9457 section 3.2); none by default."""
        return {}


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


class MfaRequired(DomainError):
    """The password was right and the account has a second factor: the login goes on at
    /login/mfa with ``mfa_token``."""

    kind = "mfa-required"
    title = "Second factor required"
    default_detail = "Send a code from your authenticator app (or a recovery code) with mfa_token to /login/mfa."

    def __init__(self, mfa_token: str) -> None:
        super().__init__()
        self.mfa_token = mfa_token

    @property
    def extensions(self) -> Mapping[str, str]:
        return {"mfa_token": self.mfa_token}


class InvalidMfaToken(DomainError):
    """An ``mfa_token`` that is unknown, expired, used, or whose password check is outdated."""

    kind = "invalid-mfa-token"
    title = "Invalid or expired mfa_token"
    default_detail = "The mfa_token is invalid, has expired or has been used. Log in again."


class MfaCodeRejected(DomainError):
    """The second step of a login with a wrong, replayed or spent code (the token stays good)."""

    kind = "invalid-mfa-code"
    title = "Wrong code"
    default_detail = "The code is wrong or was already used. Try the next code from your app."


class InvalidMfaCode(DomainError):
    """A signed-in account's code (confirming, disabling, a sensitive change) is wrong,
    missing while the factor is on, or already used."""

    kind = "invalid-mfa-code"
    title = "Wrong code"
    default_detail = "The code from your authenticator app (or a recovery code) is wrong, missing or already used."


class NoPendingEnrolment(DomainError):
    """A confirmation with no enrolment waiting for it (or a factor that is not on)."""

    kind = "no-pending-enrolment"
    title = "Nothing to confirm"
    default_detail = "No second factor is waiting for confirmation. Start with POST /api/v1/users/me/mfa/totp."


class MfaNotEnabled(DomainError):
    """Disabling a second factor the account does not have."""

    kind = "mfa-not-enabled"
    title = "No second factor"
    default_detail = "This account has no second factor to disable."


class MfaAlreadyEnabled(DomainError):
    """Enrolment while a confirmed factor is on: disable it first."""

    kind = "mfa-already-enabled"
    title = "Second factor already enabled"
    default_detail = "A second factor is already on. Disable it first to enrol a new one."


class MfaCodesThrottled(DomainError):
    """Too many wrong codes for this account: blocked for a while (the account's throttle,
    which wrong passwords count against too)."""

    kind = "mfa-codes-throttled"
    title = "Too many wrong codes"
    default_detail = "Too many wrong codes or passwords for this account. Retry after the time given in Retry-After."

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
