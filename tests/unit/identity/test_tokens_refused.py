"""Access tokens that must be refused: algorithm confusion, alg none, wrong or missing claims,
expiry beyond the leeway, unknown keys, wrong types, tampering and garbage."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import pytest
from cryptography.hazmat.primitives import serialization

from app.db.models import Role
from app.errors import NotAuthenticated
from app.identity.tokens import TokenIssuer
from tests.unit.identity.token_helpers import (
    LEEWAY,
    b64url,
    b64url_json,
    forge,
    make_issuer,
    private_key,
    public_pem,
    valid_claims,
    write_key,
)


def test_valid_forged_baseline_is_accepted(issuer: TokenIssuer, key_a: Path) -> None:
    """The forging helper itself makes acceptable tokens, so the refusals below are meaningful."""
    claims = valid_claims(role="admin")
    verified = issuer.verify_access(forge(private_key(key_a), claims))
    assert verified.role is Role.ADMIN
    assert verified.user_id == UUID(claims["sub"])


@pytest.mark.parametrize("secret", ["spki-pem", "raw-public-bytes"])
def test_hs256_signed_with_the_public_key_is_refused(issuer: TokenIssuer, key_a: Path, secret: str) -> None:
    """Algorithm confusion: an attacker who knows the public key makes an HMAC token with it."""
    public = private_key(key_a).public_key()
    hmac_key = (
        public_pem(key_a)
        if secret == "spki-pem"
        else public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    )
    header = {"alg": "HS256", "typ": "at+jwt", "kid": issuer.signing_kid}
    signing_input = f"{b64url_json(header)}.{b64url_json(valid_claims(role='admin'))}"
    signature = hmac.new(hmac_key, signing_input.encode(), hashlib.sha256).digest()
    token = f"{signing_input}.{b64url(signature)}"

    with pytest.raises(NotAuthenticated):
        issuer.verify_access(token)


@pytest.mark.parametrize("alg", ["none", "None", "NONE"])
def test_unsigned_alg_none_token_is_refused(issuer: TokenIssuer, alg: str) -> None:
    header = {"alg": alg, "typ": "at+jwt", "kid": issuer.signing_kid}
    token = f"{b64url_json(header)}.{b64url_json(valid_claims(role='admin'))}."

    with pytest.raises(NotAuthenticated):
        issuer.verify_access(token)


def test_eddsa_signature_with_a_different_alg_header_is_refused(issuer: TokenIssuer, key_a: Path) -> None:
    token = forge(private_key(key_a), valid_claims())
    header_b64, payload_b64, signature_b64 = token.split(".")
    header = json.loads(base64.urlsafe_b64decode(header_b64 + "=" * (-len(header_b64) % 4)))
    header["alg"] = "ES256"
    with pytest.raises(NotAuthenticated):
        issuer.verify_access(f"{b64url_json(header)}.{payload_b64}.{signature_b64}")


@pytest.mark.parametrize(
    "overrides",
    [
        pytest.param({"aud": "another-service"}, id="wrong-aud"),
        pytest.param({"aud": ["another-service"]}, id="wrong-aud-list"),
        pytest.param({"iss": "someone-else"}, id="wrong-iss"),
        pytest.param({"sub": "not-a-uuid"}, id="sub-not-uuid"),
        pytest.param({"sid": "not-a-uuid"}, id="sid-not-uuid"),
        pytest.param({"role": "superuser"}, id="unknown-role"),
    ],
)
def test_tokens_with_wrong_claims_are_refused(issuer: TokenIssuer, key_a: Path, overrides: dict[str, Any]) -> None:
    with pytest.raises(NotAuthenticated):
        issuer.verify_access(forge(private_key(key_a), valid_claims(**overrides)))


def test_expired_token_beyond_leeway_is_refused_with_an_expiry_detail(issuer: TokenIssuer, key_a: Path) -> None:
    now = int(time.time())
    token = forge(private_key(key_a), valid_claims(iat=now - 3600, exp=now - LEEWAY - 120))

    with pytest.raises(NotAuthenticated) as caught:
        issuer.verify_access(token)
    assert "expired" in caught.value.detail


def test_token_just_expired_within_leeway_is_accepted(key_a: Path) -> None:
    tokens = make_issuer(key_a, leeway=300)
    now = int(time.time())
    token = forge(private_key(key_a), valid_claims(iat=now - 1000, exp=now - 60))
    assert tokens.verify_access(token).expires_at == now - 60


def test_token_signed_by_an_unknown_key_is_refused(issuer: TokenIssuer, tmp_path: Path) -> None:
    stranger = private_key(write_key(tmp_path, "stranger"))
    with pytest.raises(NotAuthenticated):
        issuer.verify_access(forge(stranger, valid_claims()))


def test_token_signed_by_an_unknown_key_but_claiming_our_kid_is_refused(issuer: TokenIssuer, tmp_path: Path) -> None:
    stranger = private_key(write_key(tmp_path, "stranger"))
    with pytest.raises(NotAuthenticated):
        issuer.verify_access(forge(stranger, valid_claims(), kid=issuer.signing_kid))


@pytest.mark.parametrize("typ", [None, "JWT", "id+jwt"])
def test_token_without_access_token_type_is_refused(issuer: TokenIssuer, key_a: Path, typ: str | None) -> None:
    with pytest.raises(NotAuthenticated):
        issuer.verify_access(forge(private_key(key_a), valid_claims(), typ=typ))


def test_token_without_kid_is_refused(issuer: TokenIssuer, key_a: Path) -> None:
    with pytest.raises(NotAuthenticated):
        issuer.verify_access(forge(private_key(key_a), valid_claims(), kid=None))


def test_tampered_payload_is_refused(issuer: TokenIssuer) -> None:
    token = issuer.issue_access(user_id=uuid4(), role=Role.USER, session_id=uuid4()).token
    header_b64, payload_b64, signature_b64 = token.split(".")
    payload = json.loads(base64.urlsafe_b64decode(payload_b64 + "=" * (-len(payload_b64) % 4)))
    payload["role"] = "admin"
    tampered = f"{header_b64}.{b64url_json(payload)}.{signature_b64}"

    with pytest.raises(NotAuthenticated):
        issuer.verify_access(tampered)


def test_tampered_signature_is_refused(issuer: TokenIssuer) -> None:
    token = issuer.issue_access(user_id=uuid4(), role=Role.USER, session_id=uuid4()).token
    header_b64, payload_b64, signature_b64 = token.split(".")
    signature = bytearray(base64.urlsafe_b64decode(signature_b64 + "=" * (-len(signature_b64) % 4)))
    signature[0] ^= 0x01
    with pytest.raises(NotAuthenticated):
        issuer.verify_access(f"{header_b64}.{payload_b64}.{b64url(bytes(signature))}")


@pytest.mark.parametrize("claim", ["exp", "iat", "iss", "aud", "sub", "jti", "sid", "role"])
def test_token_missing_a_required_claim_is_refused(issuer: TokenIssuer, key_a: Path, claim: str) -> None:
    claims = valid_claims()
    del claims[claim]
    with pytest.raises(NotAuthenticated):
        issuer.verify_access(forge(private_key(key_a), claims))


@pytest.mark.parametrize("garbage", ["", "not-a-jwt", "a.b.c", "a.b", "Bearer x.y.z"])
def test_garbage_is_refused_as_not_authenticated(issuer: TokenIssuer, garbage: str) -> None:
    with pytest.raises(NotAuthenticated):
        issuer.verify_access(garbage)
