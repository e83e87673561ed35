"""The bound the README states: guesses verified per name, from the policy alone."""

from __future__ import annotations

from app.identity.throttle import guesses_verified_bound
from app.settings import LoginThrottleSettings

HOUR = 3600


def test_the_default_policy_allows_25_guesses_in_the_first_hour_and_12_an_hour_after() -> None:
    policy = LoginThrottleSettings()
    # 5 free, then blocks of 1, 2, 4 ... 256 s (9 guesses in 511 s), then one per 300 s.
    assert guesses_verified_bound(policy, HOUR) == 25
    assert guesses_verified_bound(policy, 2 * HOUR) - guesses_verified_bound(policy, HOUR) == 12


def test_the_time_a_check_takes_only_lowers_the_bound() -> None:
    policy = LoginThrottleSettings(free_attempts=2, base_delay_seconds=1, max_delay_seconds=2)
    assert guesses_verified_bound(policy, 4.5) == 5  # 3 at once, then at 1 s and 3 s
    assert guesses_verified_bound(policy, 4.5, check_seconds=0.5) <= 5
