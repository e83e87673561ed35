"""The error half of the OpenAPI document: every handler declares which problem+json
answers it can give (``responses=problems(401, 409)``), so clients and the fuzzer see the
real contract instead of Litestar's default 400 alone."""

from __future__ import annotations

from typing import Annotated

import msgspec
from litestar.openapi.datastructures import ResponseSpec

from app.web.problems import PROBLEM_MEDIA_TYPE


class FieldProblem(msgspec.Struct):
    field: str
    message: str


class Problem(msgspec.Struct, omit_defaults=True):
    """RFC 9457 problem details, as every error of the service is sent."""

    type: Annotated[str, msgspec.Meta(description="URI naming the kind of problem (docs/api.md lists them)")]
    title: str
    status: int
    detail: str
    instance: str | None = None
    errors: Annotated[list[FieldProblem], msgspec.Meta(description="One entry per invalid field (422)")] = []


class MfaRequiredProblem(msgspec.Struct, omit_defaults=True):
    """The 403 of a login whose password was right on an account with a second factor."""

    type: str
    title: str
    status: int
    detail: str
    mfa_token: Annotated[str, msgspec.Meta(description="Single use, 5 minutes: send it with a code to /login/mfa")]
    instance: str | None = None


def mfa_required() -> dict[int, ResponseSpec]:
    return {
        403: ResponseSpec(
            data_container=MfaRequiredProblem,
            description="The password is right and the account has a second factor: continue at /login/mfa.",
            media_type=PROBLEM_MEDIA_TYPE,
            generate_examples=False,
        )
    }


# What each status means across the API; handlers pick the ones they can answer.
_MEANING = {
    400: "Malformed request: not JSON, not UTF-8, nested too deeply, or a wrong current password or code.",
    401: "Missing, invalid or expired credentials (the same answer for every reason).",
    403: "The caller's role may not do this.",
    404: "No such (live) user.",
    409: "Username or email already taken; `errors` names the field.",
    413: "Body larger than the configured limit (64 KiB by default).",
    422: "Invalid input; `errors` lists every problem at once.",
    429: "Rate limited per client address, or too many failed logins for this name; see Retry-After.",
    503: "Busy (password-hashing capacity) or a backing service is unavailable; see Retry-After.",
}


def problems(*statuses: int) -> dict[int, ResponseSpec]:
    return {
        status: ResponseSpec(
            data_container=Problem,
            description=_MEANING[status],
            media_type=PROBLEM_MEDIA_TYPE,
            generate_examples=False,
        )
        for status in statuses
    }


# Every request with a JSON body can be malformed, too large or invalid.
BODY = (400, 413, 422)


# The security requirement of the controllers that need a bearer token (the scheme is
# declared in create_app's OpenAPIConfig); the rest of the API declares none.
BEARER: dict[str, list[str]] = {"BearerToken": []}
