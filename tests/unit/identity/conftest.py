"""Signing keys and an issuer for the access-token tests (tests/unit/identity/test_tokens_*.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.identity.tokens import TokenIssuer
from tests.unit.identity.token_helpers import make_issuer, write_key


@pytest.fixture
def key_a(tmp_path: Path) -> Path:
    return write_key(tmp_path, "a")


@pytest.fixture
def key_b(tmp_path: Path) -> Path:
    return write_key(tmp_path, "b")


@pytest.fixture
def issuer(key_a: Path) -> TokenIssuer:
    return make_issuer(key_a)
