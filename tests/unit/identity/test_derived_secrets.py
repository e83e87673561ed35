"""Secrets derived from the signing key (the account pages' CSRF secret): the same on every
replica that holds the key, different per purpose and per key, and not the key itself."""

from __future__ import annotations

from pathlib import Path

from tests.unit.identity.token_helpers import make_issuer


def test_replicas_with_the_same_key_derive_the_same_secret(key_a: Path) -> None:
    assert make_issuer(key_a).derived_secret("csrf") == make_issuer(key_a).derived_secret("csrf")


def test_the_secret_differs_per_purpose_and_per_key(key_a: Path, key_b: Path) -> None:
    secret = make_issuer(key_a).derived_secret("csrf")

    assert len(bytes.fromhex(secret)) == 32
    assert make_issuer(key_a).derived_secret("other") != secret
    assert make_issuer(key_b).derived_secret("csrf") != secret  # a rotated key: new secret
    assert secret not in key_a.read_text()
