"""The second factor in the load: accounts seeded ``--with-totp`` and their codes.

The seeded accounts' TOTP secrets are derived from the shared password, as
``app.identity.totp.derived_totp_secret`` derives them, so the load generator computes
every code itself, as an authenticator app would. Both the derivation and RFC 6238 are
written out here with the standard library, not imported from the app or pyotp: the
Kubernetes and compose load tests run this file in the stock Locust image, which has
neither. ``tests/loadtests/test_second_factor_codes.py`` holds them equal to the app's
derivation and to pyotp's codes, so the copy cannot drift. The service accepts a code of a given time step
once per account (no replay) and counts a refused code against the account's throttle, so
the generator must never send one twice: each Locust process keeps the last step it used
per account and takes the current step's code, else the next step's (the service accepts
one step either side), else another account. Distributed workers take disjoint slices of
the accounts (worker ``k`` of ``n`` the accounts ``i`` with ``i % n == k``), so no two
processes share one.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import random
import struct
import time

from loadtests.scenarios.config import LoadTestConfig

TOTP_PERIOD_SECONDS = 30
TOTP_DIGITS = 6

# Tries to find an account with a free time step before giving up on this login: with
# hundreds of accounts per process and a few MFA logins a second, the first try nearly
# always succeeds.
PICK_TRIES = 8


class SeededFactors:
    def __init__(self, cfg: LoadTestConfig, worker_index: int, worker_count: int) -> None:
        self._cfg = cfg
        self._mine = range(1 + worker_index % worker_count, cfg.mfa_count + 1, worker_count)
        self._last_step: dict[str, int] = {}
        self._secrets: dict[str, bytes] = {}

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
        return totp_code(self._secret(username), step)

    def _secret(self, username: str) -> bytes:
        if username not in self._secrets:
            self._secrets[username] = base64.b32decode(seeded_secret(self._cfg.password, username))
        return self._secrets[username]

    @staticmethod
    def _step() -> int:
        return int(time.time() // TOTP_PERIOD_SECONDS)


def seeded_secret(password: str, username: str) -> str:
    """The base32 TOTP secret ``litestar users seed --with-totp`` gave ``username``."""
    digest = hmac.new(password.encode(), b"user-service/seeded-totp\x00" + username.encode(), hashlib.sha256)
    return base64.b32encode(digest.digest()[:20]).decode()


def totp_code(key: bytes, step: int) -> str:
    """RFC 6238 with the service's parameters (SHA-1, 6 digits, 30 s): RFC 4226's HOTP of
    the time step."""
    mac = hmac.new(key, struct.pack(">Q", step), hashlib.sha1).digest()
    offset = mac[-1] & 0x0F
    value = struct.unpack(">I", mac[offset : offset + 4])[0] & 0x7FFFFFFF
    return str(value % 10**TOTP_DIGITS).zfill(TOTP_DIGITS)
