"""Access tokens (EdDSA-signed JWTs with rotating keys) and opaque refresh tokens.

The ``kid`` of a key is its RFC 7638 JWK thumbprint, so it needs no configuration and
is the same in every replica that holds the same key.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import jwt
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from app.db.models import Role
from app.errors import NotAuthenticated
from app.settings import DEV_SIGNING_KEY_PATH, TokenSettings

ALGORITHM = "EdDSA"
ACCESS_TOKEN_TYPE = "at+jwt"  # noqa: S105 - RFC 9068: stops an ID token or other JWT being replayed as access token
_ACCEPTED_TYPES = frozenset({ACCESS_TOKEN_TYPE, "application/" + ACCESS_TOKEN_TYPE})  # RFC 9068 section 2.1
_REQUIRED_CLAIMS = ["exp", "iat", "iss", "aud", "sub", "jti", "sid", "role"]


class KeyConfigurationError(ValueError):
    """A configured key cannot be loaded or is not Ed25519."""


@dataclass(frozen=True, slots=True)
class AccessClaims:
    user_id: UUID
    session_id: UUID
    role: Role
    token_id: str
    expires_at: int


@dataclass(frozen=True, slots=True)
class IssuedAccessToken:
    token: str
    expires_in: int


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _raw_public(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def key_id(key: Ed25519PublicKey) -> str:
    """RFC 7638 thumbprint: SHA-256 over the canonical JSON of the required JWK members."""
    canonical = json.dumps({"crv": "Ed25519", "kty": "OKP", "x": _b64url(_raw_public(key))}, separators=(",", ":"))
    return _b64url(hashlib.sha256(canonical.encode()).digest())


def generate_private_key_pem() -> bytes:
    return Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _load_private(pem: bytes, origin: str) -> Ed25519PrivateKey:
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError) as exc:
        raise KeyConfigurationError(f"{origin}: not a readable PEM private key ({exc})") from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise KeyConfigurationError(f"{origin}: must be an Ed25519 key, got {type(key).__name__}")
    return key


def _load_public(pem: bytes, origin: str) -> Ed25519PublicKey:
    if b"PRIVATE KEY" in pem:
        return _load_private(pem, origin).public_key()
    try:
        key = serialization.load_pem_public_key(pem)
    except (ValueError, TypeError) as exc:
        raise KeyConfigurationError(f"{origin}: not a readable PEM public key ({exc})") from exc
    if not isinstance(key, Ed25519PublicKey):
        raise KeyConfigurationError(f"{origin}: must be an Ed25519 key, got {type(key).__name__}")
    return key


def _read(path: Path, setting: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise KeyConfigurationError(f"{setting}: cannot read {path} ({exc.strerror})") from exc


def load_signing_key(settings: TokenSettings) -> Ed25519PrivateKey:
    """The configured key, or in development a generated one kept in ``.data/`` (git-ignored)."""
    if settings.signing_key is not None:
        return _load_private(settings.signing_key.get_secret_value().encode(), "USER_SERVICE_TOKENS__SIGNING_KEY")
    if settings.signing_key_file is not None:
        setting = "USER_SERVICE_TOKENS__SIGNING_KEY_FILE"
        return _load_private(_read(settings.signing_key_file, setting), setting)
    if not DEV_SIGNING_KEY_PATH.exists():
        DEV_SIGNING_KEY_PATH.parent.mkdir(parents=True, exist_ok=True)
        DEV_SIGNING_KEY_PATH.touch(mode=0o600)
        DEV_SIGNING_KEY_PATH.write_bytes(generate_private_key_pem())
    return _load_private(DEV_SIGNING_KEY_PATH.read_bytes(), str(DEV_SIGNING_KEY_PATH))


class VerifiedTokenCache:
    """Tokens whose signature and claims were already checked, until their ``exp``.

    Keyed by the whole token string, so a cached entry is exactly the bytes that were
    verified. Bounded: when full, the oldest entry goes. Per process, no locking (one
    event loop). Revocation is not cached: the session and the user are read per request.
    """

    def __init__(self, max_entries: int) -> None:
        self._max_entries = max_entries
        self._entries: dict[str, AccessClaims] = {}

    def get(self, token: str, now: float) -> AccessClaims | None:
        claims = self._entries.get(token)
        if claims is not None and claims.expires_at <= now:
            del self._entries[token]
            return None
        return claims

    def put(self, token: str, claims: AccessClaims) -> None:
        if self._max_entries <= 0:
            return
        if len(self._entries) >= self._max_entries:
            del self._entries[next(iter(self._entries))]
        self._entries[token] = claims

    def __len__(self) -> int:
        return len(self._entries)


def development_key_id() -> str | None:
    """The thumbprint of this machine's generated development key, if there is one."""
    try:
        pem = DEV_SIGNING_KEY_PATH.read_bytes()
    except OSError:
        return None
    try:
        return key_id(_load_private(pem, str(DEV_SIGNING_KEY_PATH)).public_key())
    except KeyConfigurationError:
        return None


class TokenIssuer:
    """Signs with the current key; verifies with the current and every previous key."""

    def __init__(self, settings: TokenSettings, *, refuse_development_key: bool = False) -> None:
        self._settings = settings
        self.verified = VerifiedTokenCache(settings.verified_cache_size)
        self._signing_key = load_signing_key(settings)
        self._signing_kid = key_id(self._signing_key.public_key())
        # Production: the development key is refused by what it is, not where it lies, so
        # a copy at another path or pasted inline is caught too.
        if refuse_development_key and self._signing_kid == development_key_id():
            raise KeyConfigurationError(
                "USER_SERVICE_TOKENS__SIGNING_KEY(_FILE): this is the generated development key "
                f"({DEV_SIGNING_KEY_PATH}, same thumbprint); production needs a key of its own"
            )
        self._verification_keys: dict[str, Ed25519PublicKey] = {self._signing_kid: self._signing_key.public_key()}
        for path in settings.verification_key_files:
            setting = "USER_SERVICE_TOKENS__VERIFICATION_KEY_FILES"
            public = _load_public(_read(path, setting), f"{setting} ({path})")
            self._verification_keys.setdefault(key_id(public), public)

    @property
    def signing_kid(self) -> str:
        return self._signing_kid

    @property
    def access_ttl_seconds(self) -> int:
        return self._settings.access_ttl_seconds

    def derived_secret(self, purpose: str) -> str:
        """A 256-bit secret for ``purpose`` (hex), derived from the signing key with HKDF-SHA256.

        Every replica holds the same signing key, so every replica derives the same secret
        without another value to distribute; the secret reveals nothing of the key, differs
        per purpose, and changes when the signing key is rotated."""
        raw_key = self._signing_key.private_bytes_raw()
        info = f"user-service/{purpose}".encode()
        return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(raw_key).hex()

    def issue_access(
        self, *, user_id: UUID, role: Role, session_id: UUID, amr: tuple[str, ...] = ("pwd",)
    ) -> IssuedAccessToken:
        now = int(time.time())
        claims = {
            # How the session's login was authenticated (RFC 8176): other services may
            # demand more than a password for their own sensitive operations.
            "amr": list(amr),
            "iss": self._settings.issuer,
            "aud": self._settings.audience,
            "sub": str(user_id),
            "sid": str(session_id),
            "role": role.value,
            "iat": now,
            "exp": now + self._settings.access_ttl_seconds,
            "jti": uuid4().hex,
        }
        headers = {"kid": self._signing_kid, "typ": ACCESS_TOKEN_TYPE}
        token = jwt.encode(claims, self._signing_key, algorithm=ALGORITHM, headers=headers)
        return IssuedAccessToken(token=token, expires_in=self._settings.access_ttl_seconds)

    def verify_access(self, token: str) -> AccessClaims:
        """Decode a bearer token; any flaw (alg, kid, iss, aud, exp, type, claims) is NotAuthenticated.

        An Ed25519 verification costs a few hundred microseconds of CPU, more than the rest
        of a cached GET /users/me; a token seen before is answered from the cache until it
        expires (without the leeway: a cached token is never accepted after its exp).
        """
        if (cached := self.verified.get(token, time.time())) is not None:
            return cached
        claims = self._verify_signature_and_claims(token)
        self.verified.put(token, claims)
        return claims

    def _verify_signature_and_claims(self, token: str) -> AccessClaims:
        try:
            header = jwt.get_unverified_header(token)
            key = self._verification_keys.get(str(header.get("kid")))
            # The algorithm is pinned: "none", HS256 with the public key as secret, or any
            # other alg in the header is refused before a signature is looked at.
            if key is None or header.get("alg") != ALGORITHM or header.get("typ") not in _ACCEPTED_TYPES:
                raise NotAuthenticated()  # noqa: TRY301 - one place decides that a token is unusable
            claims: dict[str, Any] = jwt.decode(
                token,
                key,
                algorithms=[ALGORITHM],
                audience=self._settings.audience,
                issuer=self._settings.issuer,
                leeway=self._settings.leeway_seconds,
                options={"require": _REQUIRED_CLAIMS},
            )
            return AccessClaims(
                user_id=UUID(claims["sub"]),
                session_id=UUID(claims["sid"]),
                role=Role(claims["role"]),
                token_id=str(claims["jti"]),
                expires_at=int(claims["exp"]),
            )
        except NotAuthenticated:
            raise
        except (jwt.PyJWTError, ValueError, TypeError, KeyError) as exc:
            detail = "The access token has expired." if isinstance(exc, jwt.ExpiredSignatureError) else None
            raise NotAuthenticated(detail) from exc

    def jwks(self) -> dict[str, list[dict[str, str]]]:
        return {
            "keys": [
                {
                    "kty": "OKP",
                    "crv": "Ed25519",
                    "x": _b64url(_raw_public(key)),
                    "kid": kid,
                    "alg": ALGORITHM,
                    "use": "sig",
                }
                for kid, key in self._verification_keys.items()
            ]
        }


def new_refresh_token() -> tuple[str, str]:
    """A fresh opaque refresh token and the SHA-256 hex digest that is all the database keeps."""
    token = secrets.token_urlsafe(32)
    return token, hash_refresh_token(token)


def hash_refresh_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()
