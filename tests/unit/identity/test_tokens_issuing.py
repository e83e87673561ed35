"""Access tokens as issued: EdDSA JWTs whose kid is the RFC 7638 thumbprint, every claim, a
fresh jti each, the TTL and signing key from the settings; without a database."""

from __future__ import annotations

import base64
from pathlib import Path
from uuid import uuid4

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from app.db.models import Role
from app.identity.tokens import TokenIssuer
from app.settings import TokenSettings
from tests.unit.identity.token_helpers import AUDIENCE, ISSUER, make_issuer, private_key, rfc7638_thumbprint


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
