"""Request and response bodies of /api/v1/auth."""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

# Generous upper bounds on raw input, checked before any work: the real rules (API.md)
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
