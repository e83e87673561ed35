"""Domain errors, and the one place that turns every error into RFC 9457 problem details.

Business code raises the errors defined here and never imports HTTP types; the
mapping at the bottom is what the Litestar app installs as its exception handlers.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from litestar import Request, Response
from litestar.exceptions import HTTPException, ValidationException
from litestar.status_codes import HTTP_429_TOO_MANY_REQUESTS, HTTP_500_INTERNAL_SERVER_ERROR
from sqlalchemy.exc import DataError, DBAPIError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError

from app.edge.rate_limits import client_address, route_policy

PROBLEM_MEDIA_TYPE = "application/problem+json"
PROBLEM_TYPE_BASE = "https://user-service.dev/problems/"

logger = logging.getLogger(__name__)


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


class WrongCurrentPassword(DomainError):
    """A password change whose ``current_password`` does not match."""

    kind = "wrong-current-password"
    title = "Wrong current password"
    default_detail = "The current password is incorrect."


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


class DependencyUnavailable(DomainError):
    """A backing service (the database) cannot be reached right now."""

    kind = "dependency-unavailable"
    title = "Service unavailable"
    default_detail = "A backing service is unavailable. Retry shortly."


_STATUS_OF: Mapping[type[DomainError], int] = {
    InvalidInput: 422,
    AlreadyRegistered: 409,
    InvalidCredentials: 401,
    InvalidRefreshToken: 401,
    NotAuthenticated: 401,
    PermissionDenied: 403,
    UserNotFound: 404,
    WrongCurrentPassword: 400,
    HashingCapacityExceeded: 503,
    LoginThrottled: 429,
    DependencyUnavailable: 503,
}

# Litestar's own errors that come from the HTTP layer, with the problem type each gets.
_HTTP_KINDS: Mapping[int, tuple[str, str]] = {
    400: ("malformed-request", "Malformed request"),
    401: ("not-authenticated", "Not authenticated"),
    403: ("permission-denied", "Permission denied"),
    404: ("not-found", "Not found"),
    405: ("method-not-allowed", "Method not allowed"),
    413: ("payload-too-large", "Payload too large"),
    415: ("unsupported-media-type", "Unsupported media type"),
    429: ("too-many-requests", "Too many requests"),
}


def problem_response(
    *,
    status: int,
    kind: str,
    title: str,
    detail: str,
    instance: str | None = None,
    errors: Sequence[FieldError] = (),
    headers: Mapping[str, str] | None = None,
) -> Response[dict[str, Any]]:
    body: dict[str, Any] = {
        "type": PROBLEM_TYPE_BASE + kind,
        "title": title,
        "status": status,
        "detail": detail,
    }
    if instance:
        body["instance"] = instance
    if errors:
        body["errors"] = [{"field": e.field, "message": e.message} for e in errors]
    return Response(body, status_code=status, media_type=PROBLEM_MEDIA_TYPE, headers=dict(headers or {}))


def domain_error_handler(request: Request[Any, Any, Any], exc: DomainError) -> Response[dict[str, Any]]:
    status = _STATUS_OF.get(type(exc), 400)
    headers: dict[str, str] = {}
    if isinstance(exc, HashingCapacityExceeded | LoginThrottled):
        headers["Retry-After"] = str(exc.retry_after_seconds)
    elif isinstance(exc, DependencyUnavailable):
        headers["Retry-After"] = "1"
    elif isinstance(exc, NotAuthenticated):
        headers["WWW-Authenticate"] = 'Bearer realm="user-service"'
    return problem_response(
        status=status,
        kind=exc.kind,
        title=exc.title,
        detail=exc.detail,
        instance=request.url.path,
        errors=exc.errors,
        headers=headers,
    )


# msgspec names the offending field inside the message when the problem is at the body's top level.
_FIELD_IN_MESSAGE = re.compile(r"(?:missing required field|unknown field) `([^`]+)`")


def _field_error(item: Mapping[str, Any]) -> FieldError:
    message = str(item.get("message", "invalid value"))
    field = str(item.get("key") or "body")
    if field == "data":
        match = _FIELD_IN_MESSAGE.search(message)
        field = match.group(1) if match else "body"
    return FieldError(field=field, message=message)


def validation_error_handler(request: Request[Any, Any, Any], exc: ValidationException) -> Response[dict[str, Any]]:
    """Litestar's schema validation: a type, a missing field, an out-of-range query parameter."""
    items = [item for item in (exc.extra if isinstance(exc.extra, list) else []) if isinstance(item, dict)]
    # An empty body where a JSON object is required: Litestar reports the missing ``data``.
    if not items or any(item.get("message") == "'data'" for item in items):
        return problem_response(
            status=400,
            kind="malformed-request",
            title="Malformed request",
            detail="A JSON object is required as the request body.",
            instance=request.url.path,
        )
    return problem_response(
        status=422,
        kind=InvalidInput.kind,
        title=InvalidInput.title,
        detail=InvalidInput.default_detail,
        instance=request.url.path,
        errors=[_field_error(item) for item in items],
    )


def http_error_handler(request: Request[Any, Any, Any], exc: HTTPException) -> Response[dict[str, Any]]:
    status = exc.status_code
    if status >= HTTP_500_INTERNAL_SERVER_ERROR:
        return internal_error_handler(request, exc)
    kind, title = _HTTP_KINDS.get(status, ("http-error", "Request failed"))
    headers = dict(exc.headers or {})
    if status == HTTP_429_TOO_MANY_REQUESTS:
        # Litestar's rate limiter sends the draft RateLimit-* headers; clients and proxies
        # know Retry-After.
        headers.setdefault("Retry-After", headers.get("RateLimit-Reset", "1"))
        request.app.state.events.rate_limited(route_policy(request) or "other", client_address(request))
    return problem_response(
        status=status,
        kind=kind,
        title=title,
        detail=_client_detail(exc),
        instance=request.url.path,
        headers=headers,
    )


def undecodable_body_handler(request: Request[Any, Any, Any], exc: UnicodeDecodeError) -> Response[dict[str, Any]]:
    """A body that is not UTF-8: msgspec raises this before Litestar sees a JSON error."""
    return problem_response(
        status=400,
        kind="malformed-request",
        title="Malformed request",
        detail="The request body is not valid UTF-8 JSON.",
        instance=request.url.path,
    )


def internal_error_handler(request: Request[Any, Any, Any], exc: Exception) -> Response[dict[str, Any]]:
    """Anything unplanned: an unreachable database is 503, a value the database refused is 422,
    everything else a logged 500 that shows nothing of its cause."""
    if _is_database_unreachable(exc):
        return domain_error_handler(request, DependencyUnavailable())
    if caused_by(exc, DataError):
        return problem_response(
            status=422,
            kind=InvalidInput.kind,
            title=InvalidInput.title,
            detail="A value in the request cannot be stored or searched for.",
            instance=request.url.path,
        )
    logger.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return problem_response(
        status=HTTP_500_INTERNAL_SERVER_ERROR,
        kind="internal-error",
        title="Internal server error",
        detail="The server failed to handle the request; it has been logged.",
        instance=request.url.path,
    )


def _client_detail(exc: HTTPException) -> str:
    detail = str(exc.detail or "")
    # Litestar's default details name the status ("Not Found"); keep them, they carry no internals.
    return detail if len(detail) <= 200 else detail[:200]


def caused_by(exc: BaseException, kind: type[BaseException]) -> bool:
    """Whether ``kind`` is ``exc`` or anywhere in its chain of causes and contexts."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, kind):
            return True
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return False


def _is_database_unreachable(exc: BaseException) -> bool:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, PoolTimeoutError | InterfaceError | OperationalError | ConnectionError):
            return True
        if isinstance(current, DBAPIError) and current.connection_invalidated:
            return True
        if isinstance(current, OSError) and current.errno is not None:
            return True
        current = current.__cause__ or current.__context__
    return False


EXCEPTION_HANDLERS: Mapping[type[Exception] | int, Any] = {
    DomainError: domain_error_handler,
    ValidationException: validation_error_handler,
    HTTPException: http_error_handler,
    UnicodeDecodeError: undecodable_body_handler,
    Exception: internal_error_handler,
}

__all__ = [
    "EXCEPTION_HANDLERS",
    "PROBLEM_MEDIA_TYPE",
    "AlreadyRegistered",
    "DependencyUnavailable",
    "DomainError",
    "FieldError",
    "HashingCapacityExceeded",
    "InvalidCredentials",
    "InvalidInput",
    "InvalidRefreshToken",
    "NotAuthenticated",
    "PermissionDenied",
    "UserNotFound",
    "WrongCurrentPassword",
    "problem_response",
]
