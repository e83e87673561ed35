"""Key rotation: tokens of the previous key verify while it is listed, unknown keys are
refused, and the JWKS publishes each public key once and nothing private."""

from __future__ import annotations

from pathlib import Path
from uuid import uuid4

import jwt
import pytest

from app.db.models import Role
from app.errors import NotAuthenticated
from tests.unit.identity.token_helpers import make_issuer, public_pem


@pytest.mark.parametrize("old_key_form", ["private-pem", "public-pem"])
def test_token_of_the_previous_key_still_verifies_during_rotation(
    tmp_path: Path, key_a: Path, key_b: Path, old_key_form: str
) -> None:
    old = make_issuer(key_a)
    old_token = old.issue_access(user_id=uuid4(), role=Role.ADMIN, session_id=uuid4()).token
    if old_key_form == "private-pem":
        verification_file = key_a
    else:
        verification_file = tmp_path / "a.pub.pem"
        verification_file.write_bytes(public_pem(key_a))

    rotated = make_issuer(key_b, verification_file)

    assert rotated.verify_access(old_token).role is Role.ADMIN
    kids = {jwk["kid"] for jwk in rotated.jwks()["keys"]}
    assert kids == {old.signing_kid, rotated.signing_kid}
    assert old.signing_kid != rotated.signing_kid
    # New tokens are signed with the new key.
    new_token = rotated.issue_access(user_id=uuid4(), role=Role.USER, session_id=uuid4()).token
    assert jwt.get_unverified_header(new_token)["kid"] == rotated.signing_kid
    assert rotated.verify_access(new_token).role is Role.USER


def test_token_of_a_key_the_issuer_does_not_know_is_refused(key_a: Path, key_b: Path) -> None:
    old_token = make_issuer(key_a).issue_access(user_id=uuid4(), role=Role.USER, session_id=uuid4()).token
    only_b = make_issuer(key_b)

    with pytest.raises(NotAuthenticated):
        only_b.verify_access(old_token)
    assert [jwk["kid"] for jwk in only_b.jwks()["keys"]] == [only_b.signing_kid]


def test_jwks_lists_a_key_once_even_if_configured_twice(key_a: Path) -> None:
    tokens = make_issuer(key_a, key_a)
    assert [jwk["kid"] for jwk in tokens.jwks()["keys"]] == [tokens.signing_kid]


def test_jwks_never_publishes_private_material(key_a: Path, key_b: Path) -> None:
    jwks = make_issuer(key_b, key_a).jwks()
    for jwk in jwks["keys"]:
        assert "d" not in jwk
        assert set(jwk) == {"kty", "crv", "x", "kid", "alg", "use"}
