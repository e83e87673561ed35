"""The one place that turns errors into RFC 9457 problem details.

Domain errors (app/errors.py), Litestar's own HTTP errors, validation failures and
anything unplanned all leave the service through here, as do the answers the service
writes itself outside routing (431 in app/web/limits.py, the health probes): one body
shape and one media type. The headers every response carries (X-Request-ID, security
headers) are added by the outer chain (app/web/chain.py), so they cannot be forgotten.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from litestar import Request, Response
from litestar.exceptions import HTTPException, ValidationException
from litestar.status_codes import HTTP_429_TOO_MANY_REQUESTS, HTTP_500_INTERNAL_SERVER_ERROR
from litestar.types import HTTPResponseBodyEvent, HTTPResponseStartEvent, Send
from sqlalchemy.exc import DataError, DBAPIError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError

from app.errors import (
    AlreadyRegistered,
    DependencyUnavailable,
    DomainError,
    FieldError,
    HashingCapacityExceeded,
    InvalidAccountToken,
    InvalidCredentials,
    InvalidInput,
    InvalidMfaCode,
    InvalidMfaToken,
    InvalidRefreshToken,
    LoginThrottled,
    MailRequestsThrottled,
    MfaAlreadyEnabled,
    MfaCodeRejected,
    MfaCodesThrottled,
    MfaNotEnabled,
    MfaRequired,
    NoPendingEnrolment,
    NotAuthenticated,
    PasswordChecksThrottled,
    PermissionDenied,
    SessionNotFound,
    UserNotFound,
    WrongCurrentPassword,
    caused_by,
    causes,
)
from app.web.rate_limits import client_address, route_policy

PROBLEM_MEDIA_TYPE = "application/problem+json"
PROBLEM_TYPE_BASE = "https://user-service.dev/problems/"

logger = logging.getLogger(__name__)

STATUS_OF: Mapping[type[DomainError], int] = {
    InvalidInput: 422,
    AlreadyRegistered: 409,
    InvalidCredentials: 401,
    InvalidRefreshToken: 401,
    NotAuthenticated: 401,
    PermissionDenied: 403,
    UserNotFound: 404,
    SessionNotFound: 404,
    WrongCurrentPassword: 400,
    HashingCapacityExceeded: 503,
    LoginThrottled: 429,
    PasswordChecksThrottled: 429,
    InvalidAccountToken: 400,
    MailRequestsThrottled: 429,
    DependencyUnavailable: 503,
    MfaRequired: 403,
    InvalidMfaToken: 401,
    MfaCodeRejected: 401,
    InvalidMfaCode: 400,
    NoPendingEnrolment: 400,
    MfaNotEnabled: 400,
    MfaAlreadyEnabled: 409,
    MfaCodesThrottled: 429,
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

# Told of every request refused by a per-address rate limit: (policy, client address).
RateLimitObserver = Callable[[str, str], None]


def problem_document(
    *,
    status: int,
    kind: str,
    title: str,
    detail: str,
    instance: str | None = None,
    errors: Sequence[FieldError] = (),
    extensions: Mapping[str, str] | None = None,
) -> dict[str, Any]:
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
    for name, value in (extensions or {}).items():
        body.setdefault(name, value)  # never over a standard member
    return body


def problem_bytes(**document: Any) -> bytes:
    """The same document as JSON, for answers written below Litestar (raw ASGI)."""
    return json.dumps(problem_document(**document)).encode()


async def send_problem(send: Send, status: int, body: bytes, *headers: tuple[bytes, bytes]) -> None:
    """Answer with a ``problem_bytes`` document below Litestar (raw ASGI), plus ``headers``."""
    start: HTTPResponseStartEvent = {
        "type": "http.response.start",
        "status": status,
        "headers": [
            (b"content-type", PROBLEM_MEDIA_TYPE.encode()),
            (b"content-length", str(len(body)).encode()),
            *headers,
        ],
    }
    await send(start)
    end: HTTPResponseBodyEvent = {"type": "http.response.body", "body": body, "more_body": False}
    await send(end)


def problem_response(
    *,
    status: int,
    kind: str,
    title: str,
    detail: str,
    instance: str | None = None,
    errors: Sequence[FieldError] = (),
    headers: Mapping[str, str] | None = None,
    extensions: Mapping[str, str] | None = None,
) -> Response[dict[str, Any]]:
    body = problem_document(
        status=status, kind=kind, title=title, detail=detail, instance=instance, errors=errors, extensions=extensions
    )
    return Response(body, status_code=status, media_type=PROBLEM_MEDIA_TYPE, headers=dict(headers or {}))


def domain_error_handler(request: Request[Any, Any, Any], exc: DomainError) -> Response[dict[str, Any]]:
    status = STATUS_OF.get(type(exc), 400)
    headers: dict[str, str] = {}
    if isinstance(
        exc,
        HashingCapacityExceeded | LoginThrottled | PasswordChecksThrottled | MailRequestsThrottled | MfaCodesThrottled,
    ):
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
        extensions=exc.extensions,
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


def _http_error_handler(on_rate_limited: RateLimitObserver) -> Callable[..., Response[dict[str, Any]]]:
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
            on_rate_limited(route_policy(request) or "other", client_address(request))
        return problem_response(
            status=status,
            kind=kind,
            title=title,
            detail=_client_detail(exc),
            instance=request.url.path,
            headers=headers,
        )

    return http_error_handler


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
    if is_database_unreachable(exc):
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


def is_database_unreachable(exc: BaseException) -> bool:
    """A lost or refused connection, a pool timeout or a network error anywhere in the chain."""
    for link in causes(exc):
        if isinstance(link, PoolTimeoutError | InterfaceError | OperationalError | ConnectionError):
            return True
        if isinstance(link, DBAPIError) and link.connection_invalidated:
            return True
        if isinstance(link, OSError) and link.errno is not None:
            return True
    return False


def exception_handlers(on_rate_limited: RateLimitObserver) -> dict[type[Exception] | int, Any]:
    """What create_app installs: every exception type to its problem-details answer."""
    return {
        DomainError: domain_error_handler,
        ValidationException: validation_error_handler,
        HTTPException: _http_error_handler(on_rate_limited),
        UnicodeDecodeError: undecodable_body_handler,
        Exception: internal_error_handler,
    }
