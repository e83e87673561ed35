"""Access tokens (EdDSA JWTs, key rotation, JWKS) and opaque refresh tokens, without a database."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import time
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from app.auth.tokens import (
    KeyConfigurationError,
    TokenIssuer,
    generate_private_key_pem,
    hash_refresh_token,
    new_refresh_token,
)
from app.db.models import Role
from app.errors import NotAuthenticated
from app.settings import TokenSettings

ISSUER = "test-issuer"
AUDIENCE = "test-audience"
LEEWAY = 30


# --------------------------------------------------------------------------- helpers


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64url_json(value: dict[str, Any]) -> str:
    return b64url(json.dumps(value, separators=(",", ":")).encode())


def write_key(directory: Path, name: str) -> Path:
    path = directory / f"{name}.pem"
    path.write_bytes(generate_private_key_pem())
    return path


def private_key(path: Path) -> Ed25519PrivateKey:
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    assert isinstance(key, Ed25519PrivateKey)
    return key


def public_pem(path: Path) -> bytes:
    return (
        private_key(path)
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )


def rfc7638_thumbprint(public: Ed25519PublicKey) -> str:
    """Computed here from the RFC text, independently of the code under test."""
    x = b64url(public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw))
    members = {"crv": "Ed25519", "kty": "OKP", "x": x}  # required members, lexicographic order
    canonical = json.dumps(members, separators=(",", ":"), sort_keys=True).encode()
    return b64url(hashlib.sha256(canonical).digest())


def make_issuer(signing: Path, *verification: Path, leeway: int = LEEWAY) -> TokenIssuer:
    return TokenIssuer(
        TokenSettings(
            issuer=ISSUER,
            audience=AUDIENCE,
            leeway_seconds=leeway,
            signing_key_file=signing,
            verification_key_files=list(verification),
        )
    )


def valid_claims(**overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    claims: dict[str, Any] = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": str(uuid4()),
        "sid": str(uuid4()),
        "role": "user",
        "iat": now,
        "exp": now + 600,
        "jti": uuid4().hex,
    }
    claims.update(overrides)
    return claims


def forge(key: Ed25519PrivateKey, claims: dict[str, Any], **header: Any) -> str:
    """An EdDSA token signed with ``key``; header defaults to a correct access-token header."""
    headers: dict[str, Any] = {"typ": "at+jwt", "kid": rfc7638_thumbprint(key.public_key())}
    headers.update(header)
    headers = {k: v for k, v in headers.items() if v is not None}
    return jwt.encode(claims, key, algorithm="EdDSA", headers=headers)


@pytest.fixture
def key_a(tmp_path: Path) -> Path:
    return write_key(tmp_path, "a")


@pytest.fixture
def key_b(tmp_path: Path) -> Path:
    return write_key(tmp_path, "b")


@pytest.fixture
def issuer(key_a: Path) -> TokenIssuer:
    return make_issuer(key_a)


# --------------------------------------------------------------------------- issuing


def test_kid_is_the_rfc7638_thumbprint_of_the_rfc8037_example_key(tmp_path: Path) -> None:
    # RFC 8037 appendix A.1 (private key) and A.3 (its JWK thumbprint).
    d = base64.urlsafe_b64decode("nWGxne_9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A=")
    pem = Ed25519PrivateKey.from_private_bytes(d).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    path = tmp_path / "rfc8037.pem"
    path.write_bytes(pem)

    tokens = make_issuer(path)

    assert tokens.signing_kid == "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k"
    [jwk] = tokens.jwks()["keys"]
    assert jwk["x"] == "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"
    assert jwk["kid"] == "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k"


def test_fresh_access_token_verifies_and_carries_every_claim(issuer: TokenIssuer, key_a: Path) -> None:
    user_id, session_id = uuid4(), uuid4()

    issued = issuer.issue_access(user_id=user_id, role=Role.MODERATOR, session_id=session_id)

    claims = issuer.verify_access(issued.token)
    assert claims.user_id == user_id
    assert claims.session_id == session_id
    assert claims.role is Role.MODERATOR
    assert issued.expires_in == issuer.access_ttl_seconds == 900

    header = jwt.get_unverified_header(issued.token)
    assert header["alg"] == "EdDSA"
    assert header["typ"] == "at+jwt"
    assert header["kid"] == rfc7638_thumbprint(private_key(key_a).public_key())
    assert header["kid"] == issuer.signing_kid

    # Another service verifies with nothing but the published JWKS.
    [jwk] = issuer.jwks()["keys"]
    assert jwk == {"kty": "OKP", "crv": "Ed25519", "x": jwk["x"], "kid": header["kid"], "alg": "EdDSA", "use": "sig"}
    payload = jwt.decode(issued.token, jwt.PyJWK(jwk).key, algorithms=["EdDSA"], audience=AUDIENCE, issuer=ISSUER)
    assert set(payload) >= {"sub", "sid", "role", "jti", "iat", "exp", "iss", "aud"}
    assert payload["sub"] == str(user_id)
    assert payload["sid"] == str(session_id)
    assert payload["role"] == "moderator"
    assert payload["iss"] == ISSUER
    assert payload["aud"] == AUDIENCE
    assert payload["exp"] - payload["iat"] == 900
    assert claims.expires_at == payload["exp"]
    assert claims.token_id == payload["jti"]
    assert payload["jti"]


def test_every_access_token_has_its_own_jti(issuer: TokenIssuer) -> None:
    user_id, session_id = uuid4(), uuid4()
    jtis = {
        issuer.verify_access(issuer.issue_access(user_id=user_id, role=Role.USER, session_id=session_id).token).token_id
        for _ in range(20)
    }
    assert len(jtis) == 20


def test_access_ttl_comes_from_settings(key_a: Path) -> None:
    tokens = TokenIssuer(TokenSettings(signing_key_file=key_a, access_ttl_seconds=120))
    issued = tokens.issue_access(user_id=uuid4(), role=Role.USER, session_id=uuid4())
    payload = jwt.decode(issued.token, options={"verify_signature": False})
    assert issued.expires_in == 120
    assert payload["exp"] - payload["iat"] == 120


def test_inline_signing_key_is_used(key_a: Path) -> None:
    from pydantic import SecretStr

    inline = TokenIssuer(TokenSettings(signing_key=SecretStr(key_a.read_text())))
    from_file = make_issuer(key_a)
    assert inline.signing_kid == from_file.signing_kid


# --------------------------------------------------------------------------- refused tokens


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


# --------------------------------------------------------------------------- key rotation


@pytest.mark.parametrize("old_key_form", ["private-pem", "public-pem"])
def test_token_of_the_previous_key_still_verifies_during_rotation(
    tmp_path: Path, key_a: Path, key_b: Path, old_key_form: str
) -> None:
    old = make_issuer(key_a)
    old_token = old.issue_access(user_id=uuid4(), role=Role.ADMIN, session_id=uuid4()).token
    if old_key_form == "private-pem":
        verification_file = key_a
    else:
        verification_file = tmp_path / "a.pub.pem"
        verification_file.write_bytes(public_pem(key_a))

    rotated = make_issuer(key_b, verification_file)

    assert rotated.verify_access(old_token).role is Role.ADMIN
    kids = {jwk["kid"] for jwk in rotated.jwks()["keys"]}
    assert kids == {old.signing_kid, rotated.signing_kid}
    assert old.signing_kid != rotated.signing_kid
    # New tokens are signed with the new key.
    new_token = rotated.issue_access(user_id=uuid4(), role=Role.USER, session_id=uuid4()).token
    assert jwt.get_unverified_header(new_token)["kid"] == rotated.signing_kid
    assert rotated.verify_access(new_token).role is Role.USER


def test_token_of_a_key_the_issuer_does_not_know_is_refused(key_a: Path, key_b: Path) -> None:
    old_token = make_issuer(key_a).issue_access(user_id=uuid4(), role=Role.USER, session_id=uuid4()).token
    only_b = make_issuer(key_b)

    with pytest.raises(NotAuthenticated):
        only_b.verify_access(old_token)
    assert [jwk["kid"] for jwk in only_b.jwks()["keys"]] == [only_b.signing_kid]


def test_jwks_lists_a_key_once_even_if_configured_twice(key_a: Path) -> None:
    tokens = make_issuer(key_a, key_a)
    assert [jwk["kid"] for jwk in tokens.jwks()["keys"]] == [tokens.signing_kid]


def test_jwks_never_publishes_private_material(key_a: Path, key_b: Path) -> None:
    jwks = make_issuer(key_b, key_a).jwks()
    for jwk in jwks["keys"]:
        assert "d" not in jwk
        assert set(jwk) == {"kty", "crv", "x", "kid", "alg", "use"}


# --------------------------------------------------------------------------- refresh tokens


def test_refresh_token_comes_with_its_sha256_hex() -> None:
    token, digest = new_refresh_token()
    assert digest == hashlib.sha256(token.encode()).hexdigest()
    assert digest == hash_refresh_token(token)
    assert re.fullmatch(r"[0-9a-f]{64}", digest)
    assert digest != token
    assert token not in digest


def test_refresh_tokens_are_long_url_safe_and_unique() -> None:
    pairs = [new_refresh_token() for _ in range(500)]
    tokens = [token for token, _ in pairs]
    assert len(set(tokens)) == len(tokens)
    assert len({digest for _, digest in pairs}) == len(pairs)
    for token in tokens:
        assert len(token) >= 43
        assert re.fullmatch(r"[A-Za-z0-9_-]+", token)


def test_refresh_token_hash_depends_on_every_character() -> None:
    token, digest = new_refresh_token()
    altered = token[:-1] + ("A" if token[-1] != "A" else "B")
    assert hash_refresh_token(altered) != digest


# --------------------------------------------------------------------------- key loading errors


def ec_private_pem() -> bytes:
    return ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def test_non_ed25519_signing_key_file_names_the_setting(tmp_path: Path) -> None:
    path = tmp_path / "ec.pem"
    path.write_bytes(ec_private_pem())

    with pytest.raises(KeyConfigurationError, match="USER_SERVICE_TOKENS__SIGNING_KEY_FILE") as caught:
        TokenIssuer(TokenSettings(signing_key_file=path))
    assert "Ed25519" in str(caught.value)


def test_non_ed25519_inline_signing_key_names_the_setting() -> None:
    from pydantic import SecretStr

    with pytest.raises(KeyConfigurationError, match="USER_SERVICE_TOKENS__SIGNING_KEY"):
        TokenIssuer(TokenSettings(signing_key=SecretStr(ec_private_pem().decode())))


def test_missing_signing_key_file_names_the_setting(tmp_path: Path) -> None:
    with pytest.raises(KeyConfigurationError, match="USER_SERVICE_TOKENS__SIGNING_KEY_FILE"):
        TokenIssuer(TokenSettings(signing_key_file=tmp_path / "missing.pem"))


def test_unreadable_pem_names_the_setting(tmp_path: Path) -> None:
    path = tmp_path / "garbage.pem"
    path.write_text("-----BEGIN PRIVATE KEY-----\nnot base64 at all\n-----END PRIVATE KEY-----\n")
    with pytest.raises(KeyConfigurationError, match="USER_SERVICE_TOKENS__SIGNING_KEY_FILE"):
        TokenIssuer(TokenSettings(signing_key_file=path))


def test_missing_verification_key_file_names_the_setting(key_a: Path, tmp_path: Path) -> None:
    with pytest.raises(KeyConfigurationError, match="USER_SERVICE_TOKENS__VERIFICATION_KEY_FILES"):
        make_issuer(key_a, tmp_path / "missing.pem")


@pytest.mark.parametrize("form", ["private", "public"])
def test_non_ed25519_verification_key_is_refused_naming_the_file(key_a: Path, tmp_path: Path, form: str) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    path = tmp_path / f"ec-{form}.pem"
    if form == "private":
        path.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
    else:
        path.write_bytes(
            key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        )

    with pytest.raises(KeyConfigurationError) as caught:
        make_issuer(key_a, path)
    assert str(path) in str(caught.value)
    assert "Ed25519" in str(caught.value)
