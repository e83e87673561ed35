"""What the access-token tests share: the test issuer's settings, keys written to files, and
tokens forged independently of the code under test (tests/unit/identity/test_tokens_*.py)."""

from __future__ import annotations

import base64
import hashlib
import json
import time
from pathlib import Path
from typing import Any
from uuid import uuid4

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from app.identity.tokens import TokenIssuer, generate_private_key_pem
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
