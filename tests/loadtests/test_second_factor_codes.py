"""The load generator's second-factor codes: never one the service would refuse as a replay,
and distributed workers never share an account."""

from __future__ import annotations

import base64
import time

import pyotp
import pytest

from app.identity.totp import TOTP_PERIOD_SECONDS, derived_totp_secret, matching_step
from loadtests.scenarios.config import ConfigError, LoadTestConfig
from loadtests.scenarios.second_factor import SeededFactors, seeded_secret, totp_code

CONFIG = LoadTestConfig(password="seed-password-for-codes", mfa_count=10, workers=3)


def test_a_code_is_the_accounts_own_and_never_sent_twice_for_one_step() -> None:
    if TOTP_PERIOD_SECONDS - time.time() % TOTP_PERIOD_SECONDS < 2:
        time.sleep(2)  # the three codes below come from one "now"
    factors = SeededFactors(CONFIG, worker_index=0, worker_count=1)
    username = CONFIG.mfa_username(4)
    first, second, third = factors.code(username), factors.code(username), factors.code(username)
    assert first is not None
    assert second is not None
    # The service would take both (its window is a step either side), each for its own
    # step: this one's, then the next one's. A third code in this step would be a replay.
    secret = derived_totp_secret(CONFIG.password, username)
    first_step, second_step = matching_step(secret, first), matching_step(secret, second)
    assert first_step is not None
    assert second_step == first_step + 1
    assert first_step == int(time.time() // TOTP_PERIOD_SECONDS)
    assert third is None
    # Until its steps come round again, pick() passes the account over.
    assert {factors.pick() for _ in range(200)} <= {CONFIG.mfa_username(i) for i in range(1, 11)} - {username}


def test_workers_take_disjoint_slices_that_cover_every_account() -> None:
    slices = [{SeededFactors(CONFIG, worker_index=k, worker_count=3).pick() for _ in range(400)} for k in range(3)]
    assert set().union(*slices) == {CONFIG.mfa_username(i) for i in range(1, 11)}
    for k in range(3):
        assert not slices[k] & slices[(k + 1) % 3]


def test_more_workers_than_accounts_is_refused() -> None:
    with pytest.raises(ConfigError, match="LOADTEST_WORKERS"):
        LoadTestConfig.from_env({"LOADTEST_PASSWORD": "x", "LOADTEST_MFA_COUNT": "2", "LOADTEST_WORKERS": "3"})


def test_the_generators_copy_of_the_derivation_and_of_rfc_6238_matches_the_apps_and_pyotps() -> None:
    """The load generator carries its own (it runs in the stock Locust image): it must give
    the secret seeding gave, and the codes an authenticator app would."""
    for username in ("loadmfa000001", "loadmfa001999", "someone-else"):
        secret = seeded_secret("a shared seed password", username)
        assert secret == derived_totp_secret("a shared seed password", username)
        key = base64.b32decode(secret)
        for step in (0, 1, 59_000_000, int(time.time() // 30)):
            assert totp_code(key, step) == pyotp.TOTP(secret).at(step * 30)
