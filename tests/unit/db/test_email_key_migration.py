"""The key migration 0003 backfilled is the key the application computes."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable

import pytest

from app.accounts.validation import email_key
from app.db.config import MIGRATIONS_DIR


def _frozen_email_key() -> Callable[[str], str]:
    path = MIGRATIONS_DIR / "versions" / "0003_email_key.py"
    spec = importlib.util.spec_from_file_location("migration_0003", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    frozen: Callable[[str], str] = module._email_key
    return frozen


@pytest.mark.parametrize(
    "address",
    ["\u00c4NNE@example.com", "A\u0308NNE@example.com", "bo\u00df@Example.com", "\u01f0@x.org", "\uff2b@x.org"],
)
def test_the_migrations_frozen_copy_agrees_with_the_application(address: str) -> None:
    # If this fails, email_key changed: stored keys no longer match what login and
    # registration compute, so the change needs a migration that re-keys every row.
    assert _frozen_email_key()(address) == email_key(address)
