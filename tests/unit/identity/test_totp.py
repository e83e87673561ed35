"""The second factor's primitives: encryption of the secrets at rest (and its key
rotation), the time step a code belongs to, recovery codes and their hashes."""

from __future__ import annotations

import base64
import os
from pathlib import Path
from uuid import uuid4

import pyotp
import pytest
from pydantic import SecretStr

from app.identity.totp import (
    MfaKeyError,
    SecretBox,
    hash_recovery_code,
    matching_step,
    new_key_text,
    new_recovery_codes,
    new_totp_secret,
)
from app.settings import DEV_MFA_KEY_PATH, MfaSettings


def key() -> bytes:
    return os.urandom(32)


def test_a_secret_round_trips_and_is_bound_to_its_account() -> None:
    box, account = SecretBox(key()), uuid4()
    sealed = box.encrypt("JBSWY3DPEHPK3PXP", account)
    assert "JBSWY3DPEHPK3PXP" not in sealed
    assert box.decrypt(sealed, account) == ("JBSWY3DPEHPK3PXP", False)
    # Copied into another account's row, it does not open.
    with pytest.raises(MfaKeyError):
        box.decrypt(sealed, uuid4())
    with pytest.raises(MfaKeyError):
        SecretBox(key()).decrypt(sealed, account)
    tampered = sealed[:-4] + ("AAAA" if not sealed.endswith("AAAA") else "BBBB")
    with pytest.raises(MfaKeyError):
        box.decrypt(tampered, account)


def test_a_previous_key_still_decrypts_and_asks_for_re_encryption() -> None:
    old, new, account = key(), key(), uuid4()
    sealed_with_old = SecretBox(old).encrypt("SECRET", account)
    rotated = SecretBox(new, [old])
    assert rotated.decrypt(sealed_with_old, account) == ("SECRET", True)
    assert rotated.decrypt(rotated.encrypt("SECRET", account), account) == ("SECRET", False)


def test_keys_come_from_a_file_or_inline_and_bad_ones_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "mfa.key"
    path.write_text(new_key_text())
    account = uuid4()
    from_file = SecretBox.from_settings(MfaSettings(encryption_key_file=path))
    inline = SecretBox.from_settings(MfaSettings(encryption_key=SecretStr(path.read_text())))
    assert inline.decrypt(from_file.encrypt("S", account), account) == ("S", False)
    short = base64.b64encode(os.urandom(16)).decode()
    with pytest.raises(MfaKeyError, match="32 bytes"):
        SecretBox.from_settings(MfaSettings(encryption_key=SecretStr(short)))
    with pytest.raises(MfaKeyError, match="cannot read"):
        SecretBox.from_settings(MfaSettings(encryption_key_file=tmp_path / "missing.key"))


def test_development_generates_one_key_and_keeps_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    account = uuid4()
    sealed = SecretBox.from_settings(MfaSettings()).encrypt("S", account)
    assert (tmp_path / DEV_MFA_KEY_PATH).stat().st_mode & 0o777 == 0o600
    assert SecretBox.from_settings(MfaSettings()).decrypt(sealed, account) == ("S", False)


def test_a_code_matches_its_step_within_one_step_either_way() -> None:
    secret, now = new_totp_secret(), 1_800_000_015.0
    totp = pyotp.TOTP(secret)
    step = totp.timecode(now)
    for offset in (-1, 0, 1):
        assert matching_step(secret, totp.generate_otp(step + offset), now=now) == step + offset
    for offset in (-2, 2):
        assert matching_step(secret, totp.generate_otp(step + offset), now=now) is None
    assert matching_step(secret, "12345", now=now) is None
    assert matching_step(secret, "abcdef", now=now) is None


def test_recovery_codes_are_ten_distinct_and_hashed_per_account_loosely() -> None:
    codes = new_recovery_codes()
    assert len(set(codes)) == 10
    assert all(len(c) == 19 and c.count("-") == 3 for c in codes)
    account = uuid4()
    digest = hash_recovery_code(codes[0], account)
    assert hash_recovery_code(codes[0].upper().replace("-", " "), account) == digest
    assert hash_recovery_code(codes[0], uuid4()) != digest
