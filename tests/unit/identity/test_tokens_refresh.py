"""Opaque refresh tokens: long, URL-safe, unique, and stored only as their SHA-256 hex."""

from __future__ import annotations

import hashlib
import re

from app.identity.tokens import hash_refresh_token, new_refresh_token


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
