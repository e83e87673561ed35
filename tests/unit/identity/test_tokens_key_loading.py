"""Key loading errors: a wrong, missing or unreadable key names the setting (or the file)
that supplied it."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from app.identity.tokens import KeyConfigurationError, TokenIssuer, generate_private_key_pem
from app.settings import TokenSettings
from tests.unit.identity.token_helpers import make_issuer


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


def test_production_refuses_a_copy_of_the_development_key_wherever_it_comes_from(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Finding 5 of #12: the generated key copied elsewhere, or pasted inline, is still the
    development key, and production knows it by its thumbprint."""
    from pydantic import SecretStr

    monkeypatch.chdir(tmp_path)
    TokenIssuer(TokenSettings())  # development: generates .data/dev-signing-key.pem here
    pem = (tmp_path / ".data" / "dev-signing-key.pem").read_bytes()
    copy = tmp_path / "innocent-looking.pem"
    copy.write_bytes(pem)

    for settings in (TokenSettings(signing_key_file=copy), TokenSettings(signing_key=SecretStr(pem.decode()))):
        with pytest.raises(KeyConfigurationError, match="generated development key"):
            TokenIssuer(settings, refuse_development_key=True)
        assert TokenIssuer(settings).signing_kid  # development and tests may use it
    other = tmp_path / "own.pem"
    other.write_bytes(generate_private_key_pem())
    assert TokenIssuer(TokenSettings(signing_key_file=other), refuse_development_key=True).signing_kid
