"""The second factor's primitives: TOTP codes (RFC 6238, through pyotp), the encryption of
TOTP secrets at rest, recovery codes and login challenges. No feature imports, no I/O
beyond reading the key files at start-up.

pyotp rather than RFC 6238 by hand: it is small, typed, maintained, and what the
authenticator apps' own test vectors are checked against; what it does not do (finding
*which* time step a code belongs to, for replay protection) is a loop over
``generate_otp`` here.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import re
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from uuid import UUID

import pyotp
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from app.settings import DEV_MFA_KEY_PATH, MfaSettings

TOTP_DIGITS = 6
TOTP_PERIOD_SECONDS = 30
# Steps either side of now that a code may come from: a phone's clock a little off, a code
# typed as it rolled over. RFC 6238 section 5.2 recommends at most one.
TOTP_WINDOW_STEPS = 1
RECOVERY_CODES_PER_ENROLMENT = 10
# 16 characters of base32 = 80 random bits per recovery code.
_RECOVERY_CODE_CHARS = 16
_RECOVERY_ALPHABET = "abcdefghijklmnopqrstuvwxyz234567"
_TOTP_CODE = re.compile(r"^[0-9]{6}$")


class MfaKeyError(ValueError):
    """A configured TOTP encryption key cannot be read or is not 32 bytes of base64."""


# --- Encryption of the secrets at rest ---------------------------------------------------


def key_id(key: bytes) -> str:
    """A short public name for a key (not secret: a digest), stored with each ciphertext so
    that decryption picks the right key during a rotation."""
    return hashlib.sha256(b"user-service/mfa-key-id\x00" + key).hexdigest()[:8]


def _decode_key(raw: str, origin: str) -> bytes:
    text = raw.strip()
    try:
        key = base64.b64decode(text.replace("-", "+").replace("_", "/") + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise MfaKeyError(f"{origin}: not base64 ({exc})") from exc
    if len(key) != 32:
        raise MfaKeyError(f"{origin}: must be 32 bytes (base64 of `openssl rand 32`), got {len(key)}")
    return key


def _read_key(path: Path, origin: str) -> bytes:
    try:
        return _decode_key(path.read_text(encoding="ascii"), f"{origin} ({path})")
    except (OSError, UnicodeDecodeError) as exc:
        raise MfaKeyError(f"{origin}: cannot read {path} ({exc})") from exc


def new_key_text() -> str:
    return base64.b64encode(secrets.token_bytes(32)).decode() + "\n"


def _development_key() -> bytes:
    """Development and tests: a key generated once into ``.data/`` (git-ignored), as the
    development signing key is. Written to a temporary file and linked into place, so
    that two processes starting at once agree on one key (the loser reads the winner's)."""
    path = DEV_MFA_KEY_PATH
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="ascii") as handle:
            handle.write(new_key_text())
        try:
            os.link(temporary, path)
        except FileExistsError:
            pass
        finally:
            temporary.unlink()
    return _read_key(path, str(path))


class SecretBox:
    """AES-256-GCM with the current key; decrypts with the current and every previous key.

    A ciphertext is ``v1.<key id>.<base64(nonce | ciphertext | tag)>``. The account's id is
    the associated data: a ciphertext copied into another account's row does not decrypt."""

    def __init__(self, current: bytes, previous: list[bytes] | None = None) -> None:
        self._current_id = key_id(current)
        self._keys = {key_id(key): AESGCM(key) for key in [*(previous or []), current]}

    @classmethod
    def from_settings(cls, settings: MfaSettings) -> SecretBox:
        if settings.encryption_key is not None:
            current = _decode_key(settings.encryption_key.get_secret_value(), "USER_SERVICE_MFA__ENCRYPTION_KEY")
        elif settings.encryption_key_file is not None:
            current = _read_key(settings.encryption_key_file, "USER_SERVICE_MFA__ENCRYPTION_KEY_FILE")
        else:
            current = _development_key()
        previous = [
            _read_key(path, "USER_SERVICE_MFA__PREVIOUS_ENCRYPTION_KEY_FILES")
            for path in settings.previous_encryption_key_files
        ]
        return cls(current, previous)

    def encrypt(self, plaintext: str, account: UUID) -> str:
        nonce = secrets.token_bytes(12)
        sealed = self._keys[self._current_id].encrypt(nonce, plaintext.encode(), account.bytes)
        return f"v1.{self._current_id}.{base64.urlsafe_b64encode(nonce + sealed).decode()}"

    def decrypt(self, ciphertext: str, account: UUID) -> tuple[str, bool]:
        """The plaintext, and whether it was sealed with a previous key (then the caller
        re-encrypts it, so that the old key can be retired). MfaKeyError if no key opens
        it: a key missing from the configuration, or a row that was tampered with."""
        parts = ciphertext.split(".", 2)
        version, kid, body = parts if len(parts) == 3 else ("", "", "")
        aead = self._keys.get(kid)
        if version != "v1" or aead is None:
            raise MfaKeyError(f"no configured key {kid!r} for this TOTP secret")
        try:
            raw = base64.urlsafe_b64decode(body)
            plaintext = aead.decrypt(raw[:12], raw[12:], account.bytes)
        except (InvalidTag, binascii.Error, ValueError) as exc:
            raise MfaKeyError("a TOTP secret does not decrypt with its key") from exc
        return plaintext.decode(), kid != self._current_id


# --- TOTP ----------------------------------------------------------------------------------


def new_totp_secret() -> str:
    """160 random bits in base32, the length RFC 4226 recommends and every app accepts."""
    return pyotp.random_base32(32)


def provisioning_uri(secret: str, *, account_name: str, issuer: str) -> str:
    """The ``otpauth://totp/...`` URI an authenticator app reads from a QR code."""
    return pyotp.TOTP(secret, digits=TOTP_DIGITS, interval=TOTP_PERIOD_SECONDS).provisioning_uri(
        name=account_name, issuer_name=issuer
    )


def derived_totp_secret(key: str, account_name: str) -> str:
    """A TOTP secret (base32, 160 bits as RFC 4226 recommends) derived from ``key``: an
    HMAC of the account's name. Only for seeded load-test accounts, whose load generator
    knows their shared password and so computes their codes (app/accounts/seeding.py)."""
    digest = hmac.new(key.encode(), b"user-service/seeded-totp\x00" + account_name.encode(), hashlib.sha256)
    return base64.b32encode(digest.digest()[:20]).decode()


def looks_like_totp_code(code: str) -> bool:
    return bool(_TOTP_CODE.fullmatch(code.strip().replace(" ", "")))


def matching_step(secret: str, code: str, *, now: float | None = None) -> int | None:
    """The time step (counter) whose code ``code`` is, within the window around ``now``;
    None if none. The step is what replay protection records: a code is good once."""
    typed = code.strip().replace(" ", "")
    if not _TOTP_CODE.fullmatch(typed):
        return None
    totp = pyotp.TOTP(secret, digits=TOTP_DIGITS, interval=TOTP_PERIOD_SECONDS)
    current = totp.timecode(time.time() if now is None else now)
    found = None
    # Every step is compared (no early exit), each in constant time.
    for step in range(current - TOTP_WINDOW_STEPS, current + TOTP_WINDOW_STEPS + 1):
        if hmac.compare_digest(totp.generate_otp(step), typed):
            found = step
    return found


# --- Recovery codes ------------------------------------------------------------------------


def new_recovery_codes() -> list[str]:
    """Ten codes like ``k3pq-7xwd-a2mf-zt5h`` (80 random bits each), shown once."""
    codes = []
    for _ in range(RECOVERY_CODES_PER_ENROLMENT):
        raw = "".join(secrets.choice(_RECOVERY_ALPHABET) for _ in range(_RECOVERY_CODE_CHARS))
        codes.append("-".join(raw[i : i + 4] for i in range(0, _RECOVERY_CODE_CHARS, 4)))
    return codes


def hash_recovery_code(code: str, account: UUID) -> str:
    """SHA-256 over the account and the code as typed loosely (case, dashes and spaces do
    not matter). A fast hash suffices: the code is 80 random bits, not a password a person
    chose, so there is no dictionary to try and a slow hash would only add an argon2
    verify per code to a login that must not cost one. The account in the input keeps equal
    codes of two accounts apart."""
    normalized = "".join(ch for ch in code.lower() if ch.isalnum())
    return hashlib.sha256(f"{account}\x00{normalized}".encode()).hexdigest()


# --- Login challenges --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class NewChallenge:
    token: str  # what the client gets (mfa_token), never stored
    token_hash: str  # what the database keeps


def new_challenge() -> NewChallenge:
    token = secrets.token_urlsafe(32)
    return NewChallenge(token, hash_challenge(token))


def hash_challenge(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def password_binding(password_hash: str) -> str:
    """What a challenge is bound to besides the account: the password hash that was checked.
    A password change or reset between the two steps voids the challenge."""
    return hashlib.sha256(f"mfa-challenge\x00{password_hash}".encode()).hexdigest()
