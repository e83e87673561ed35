"""The per-process cache of verified access tokens: never past a token's exp, bounded, and
off when its size is 0."""

from __future__ import annotations

from uuid import uuid4

from app.db.models import Role
from app.identity.tokens import AccessClaims, VerifiedTokenCache

NOW = 1_800_000_000.0


def claims(expires_at: float) -> AccessClaims:
    return AccessClaims(
        user_id=uuid4(), session_id=uuid4(), role=Role.USER, token_id=uuid4().hex, expires_at=int(expires_at)
    )


def test_a_cached_token_is_answered_until_its_exp_and_never_after() -> None:
    cache = VerifiedTokenCache(max_entries=10)
    entry = claims(NOW + 60)
    cache.put("token", entry)
    assert cache.get("token", NOW + 59) is entry
    # At exp the entry is refused and dropped: the next look-up verifies the token again
    # (and finds it expired).
    assert cache.get("token", NOW + 60) is None
    assert len(cache) == 0
    assert cache.get("never-seen", NOW) is None


def test_a_full_cache_forgets_its_oldest_entry() -> None:
    cache = VerifiedTokenCache(max_entries=2)
    first, second, third = claims(NOW + 60), claims(NOW + 60), claims(NOW + 60)
    cache.put("first", first)
    cache.put("second", second)
    cache.put("third", third)
    assert len(cache) == 2
    assert cache.get("first", NOW) is None
    assert cache.get("second", NOW) is second
    assert cache.get("third", NOW) is third


def test_size_zero_turns_the_cache_off() -> None:
    cache = VerifiedTokenCache(max_entries=0)
    cache.put("token", claims(NOW + 60))
    assert len(cache) == 0
    assert cache.get("token", NOW) is None
