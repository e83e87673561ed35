"""Request and response bodies of /api/v1/auth and /api/v1/users/me."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Literal, Self
from uuid import UUID

import msgspec

from app.db.models import Role

# Generous upper bounds on raw input, checked before any work: the real rules (docs/api.md)
# run after Unicode normalisation and give per-field messages.
RawPassword = Annotated[str, msgspec.Meta(max_length=1024, description="8-256 characters after NFKC normalisation")]
RawToken = Annotated[str, msgspec.Meta(max_length=512)]


class UserCreate(msgspec.Struct, forbid_unknown_fields=True):
    username: Annotated[
        str, msgspec.Meta(max_length=128, description="3-32 of A-Z a-z 0-9 _ . - after NFKC; case-insensitive")
    ]
    email: Annotated[str, msgspec.Meta(max_length=320)]
    password: RawPassword
    full_name: Annotated[str, msgspec.Meta(max_length=400)] | None = None


class LoginRequest(msgspec.Struct, forbid_unknown_fields=True):
    username: Annotated[str, msgspec.Meta(max_length=320, description="Username or email")]
    password: RawPassword


class RefreshRequest(msgspec.Struct, forbid_unknown_fields=True):
    refresh_token: RawToken


class TokenPair(msgspec.Struct):
    access_token: str
    refresh_token: str
    expires_in: Annotated[int, msgspec.Meta(description="Lifetime of the access token in seconds")]
    token_type: Literal["bearer"] = "bearer"  # noqa: S105 - a token type, not a secret


class JsonWebKey(msgspec.Struct):
    kty: str
    crv: str
    x: str
    kid: str
    alg: str
    use: str


class JsonWebKeySet(msgspec.Struct):
    keys: list[JsonWebKey]


# An account as the API shows it. Its fields are the one list of what a user is to a
# client: the authentication middleware selects exactly these columns. (No docstring: it
# would become the schema's description in the OpenAPI document.)
class UserRead(msgspec.Struct):
    id: UUID
    username: str
    email: str
    full_name: str | None
    role: Role
    is_active: bool
    is_verified: bool
    mfa_enabled: bool
    created_at: dt.datetime
    updated_at: dt.datetime

    @classmethod
    def of(cls, user: object) -> UserRead:
        """From anything that has these fields as attributes (the ORM entity)."""
        return cls(*(getattr(user, field) for field in cls.__struct_fields__))


class ProfileUpdate(msgspec.Struct, forbid_unknown_fields=True):
    """Only the fields present change; ``full_name: null`` clears the name. The email
    changes through POST /api/v1/users/me/email and a confirmed link."""

    full_name: Annotated[str, msgspec.Meta(max_length=400)] | msgspec.UnsetType | None = msgspec.UNSET


# A code from the authenticator app (6 digits) or a recovery code.
MfaCode = Annotated[str, msgspec.Meta(min_length=1, max_length=64, description="A TOTP code or a recovery code")]


class PasswordChange(msgspec.Struct, forbid_unknown_fields=True):
    current_password: RawPassword
    new_password: RawPassword
    # Required when the account has a second factor (docs/api.md, "Second factor").
    code: MfaCode | None = None


RawEmail = Annotated[str, msgspec.Meta(max_length=320)]


class TokenConfirmation(msgspec.Struct, forbid_unknown_fields=True):
    token: RawToken


class PasswordResetRequest(msgspec.Struct, forbid_unknown_fields=True):
    email: RawEmail


class PasswordResetConfirmation(msgspec.Struct, forbid_unknown_fields=True):
    token: RawToken
    new_password: RawPassword


class EmailChangeRequest(msgspec.Struct, forbid_unknown_fields=True):
    new_email: RawEmail
    current_password: RawPassword
    # Required when the account has a second factor (docs/api.md, "Second factor").
    code: MfaCode | None = None


class MfaLoginRequest(msgspec.Struct, forbid_unknown_fields=True):
    mfa_token: RawToken
    code: MfaCode


class TotpEnrolmentRequest(msgspec.Struct, forbid_unknown_fields=True):
    current_password: RawPassword


class TotpEnrolment(msgspec.Struct):
    secret: Annotated[str, msgspec.Meta(description="base32; the same as the otpauth_uri's secret")]
    otpauth_uri: Annotated[str, msgspec.Meta(description="otpauth://totp/... for a QR code")]


class TotpConfirmation(msgspec.Struct, forbid_unknown_fields=True):
    code: MfaCode


class RecoveryCodes(msgspec.Struct):
    recovery_codes: Annotated[list[str], msgspec.Meta(description="Ten single-use codes, shown only this once")]


class TotpRemoval(msgspec.Struct, forbid_unknown_fields=True):
    current_password: RawPassword
    code: MfaCode


# The answer to every request for a mail: the same whether or not a mail went out.
class MailAccepted(msgspec.Struct):
    detail: str


# A login session as an admin sees another user's sessions.
class AdminSessionRead(msgspec.Struct):
    id: UUID
    created_at: dt.datetime
    last_used_at: dt.datetime
    expires_at: dt.datetime
    ip: str | None
    user_agent: str | None
    amr: list[str]

    @classmethod
    def of(cls, view: object, **extra: Any) -> Self:
        """From anything with these fields as attributes (a SessionView), plus ``extra``."""
        fields: dict[str, Any] = {field: getattr(view, field) for field in AdminSessionRead.__struct_fields__}
        return cls(**fields, **extra)


class AdminSessionList(msgspec.Struct):
    items: list[AdminSessionRead]


# The same as its owner sees it; ``current`` marks the one the request came from.
class SessionRead(AdminSessionRead):
    current: bool


class SessionList(msgspec.Struct):
    items: list[SessionRead]


# One row of the audit trail (API.md's Security event).
class SecurityEventRead(msgspec.Struct):
    id: UUID
    type: str
    at: dt.datetime
    ip: str | None
    user_agent: str | None
    request_id: str | None
    detail: dict[str, Any]


class SecurityEventPage(msgspec.Struct):
    items: list[SecurityEventRead]
    total: int
    limit: int
    offset: int
