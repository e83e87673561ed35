"""The second factor in the load: accounts seeded ``--with-totp`` and their codes.

The seeded accounts' TOTP secrets are derived from the shared password
(``app.identity.totp.derived_totp_secret``), so the load generator computes every code
itself, as an authenticator app would. The service accepts a code of a given time step
once per account (no replay) and counts a refused code against the account's throttle, so
the generator must never send one twice: each Locust process keeps the last step it used
per account and takes the current step's code, else the next step's (the service accepts
one step either side), else another account. Distributed workers take disjoint slices of
the accounts (worker ``k`` of ``n`` the accounts ``i`` with ``i % n == k``), so no two
processes share one.
"""

from __future__ import annotations

import random
import time

import pyotp

from app.identity.totp import TOTP_PERIOD_SECONDS, derived_totp_secret
from loadtests.scenarios.config import LoadTestConfig

# Tries to find an account with a free time step before giving up on this login: with
# hundreds of accounts per process and a few MFA logins a second, the first try nearly
# always succeeds.
PICK_TRIES = 8


class SeededFactors:
    def __init__(self, cfg: LoadTestConfig, worker_index: int, worker_count: int) -> None:
        self._cfg = cfg
        self._mine = range(1 + worker_index % worker_count, cfg.mfa_count + 1, worker_count)
        self._last_step: dict[str, int] = {}
        self._secrets: dict[str, str] = {}

    @property
    def active(self) -> bool:
        return len(self._mine) > 0

    def pick(self) -> str | None:
        """An account of this process's slice with a code still unused; None if every try
        found one used for this step and the next (a generator far ahead of its accounts)."""
        now = self._step()
        for _ in range(PICK_TRIES):
            username = self._cfg.mfa_username(random.choice(self._mine))  # noqa: S311 - not crypto
            if self._last_step.get(username, -1) <= now:
                return username
        return None

    def code(self, username: str) -> str | None:
        """The code to send now for ``username``, its step recorded as used; None when
        this step's and the next step's codes were both sent already."""
        now = self._step()
        last = self._last_step.get(username, -1)
        step = now if last < now else now + 1 if last < now + 1 else None
        if step is None:
            return None
        self._last_step[username] = step
        return pyotp.TOTP(self._secret(username)).at(step * TOTP_PERIOD_SECONDS)

    def _secret(self, username: str) -> str:
        if username not in self._secrets:
            self._secrets[username] = derived_totp_secret(self._cfg.password, username)
        return self._secrets[username]

    @staticmethod
    def _step() -> int:
        return int(time.time() // TOTP_PERIOD_SECONDS)
