"""What the scenarios read from the environment (the runner sets all of it).

| variable | meaning | default |
|---|---|---|
| ``LOADTEST_PASSWORD`` | password of the seeded users | required |
| ``LOADTEST_USER_PREFIX`` | seeded usernames are ``{prefix}{i:06d}`` | ``loadtest`` |
| ``LOADTEST_USER_COUNT`` | how many were seeded (i = 1..count) | ``1000`` |
| ``LOADTEST_ADMIN_USERNAME`` / ``_PASSWORD`` | the admin AdminBrowser logs in as | AdminBrowser off |
| ``LOADTEST_WRONG_PASSWORD_SHARE`` | share of logins sent with a wrong password | ``0.1`` |
| ``LOADTEST_MIX`` | weights by class, ``ApiClient=6,LoginStorm=2``; unnamed classes do not run | class defaults |
| ``LOADTEST_MFA_PREFIX`` | accounts seeded ``--with-totp`` are ``{prefix}{i:06d}`` | ``loadmfa`` |
| ``LOADTEST_MFA_COUNT`` | how many were seeded (0: no login uses a second factor) | ``0`` |
| ``LOADTEST_MFA_SHARE`` | share of LoginStorm's logins made by those accounts, with both steps | ``0.2`` |
| ``LOADTEST_ARRIVAL_PACING_SECONDS`` | LoginArrivals: mean gap of a user's Poisson logins (rate: users ÷ it) | ``2`` |
| ``LOADTEST_WORKERS`` | Locust worker processes (the runner sets it); each takes its own slice of them | ``1`` |

The attack classes (``loadtests/scenarios/attacks.py``) run only when ``LOADTEST_MIX`` names them:

| variable | meaning | default |
|---|---|---|
| ``LOADTEST_TARGET_PREFIX`` | the attacked accounts are ``{prefix}{i:06d}`` (never a legitimate user) | ``target`` |
| ``LOADTEST_TARGET_COUNT`` | how many were seeded (i = 1..count) | ``1000`` |
| ``LOADTEST_STUFFING_ADDRESSES`` | addresses the credential stuffer rotates through | ``5`` |
| ``LOADTEST_SPRAYING_ACCOUNTS`` | seeded accounts the password sprayer aims at (and as many unknown names) | ``3`` |
| ``LOADTEST_ATTACK_RATE`` | login attempts per second of each attacking Locust user | ``5`` |
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from loadtests.scenarios.addresses import STUFFERS, hosts

# LoginArrivals' mean gap between one user's logins, unless LOADTEST_ARRIVAL_PACING_SECONDS
# says otherwise (the step plan reads it too, to turn users into logins/s offered).
DEFAULT_ARRIVAL_PACING_SECONDS = "2"

USER_CLASSES = (
    "LoginStorm",
    "ApiClient",
    "SignUp",
    "AdminBrowser",
    "CredentialStuffer",
    "PasswordSprayer",
    "LoginArrivals",
)
ATTACK_CLASSES = ("CredentialStuffer", "PasswordSprayer")
MAX_STUFFING_ADDRESSES = hosts(STUFFERS)


class ConfigError(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class LoadTestConfig:
    password: str
    user_prefix: str = "loadtest"
    user_count: int = 1000
    admin_username: str | None = None
    admin_password: str | None = None
    wrong_password_share: float = 0.1
    mix: dict[str, int] | None = field(default=None)
    target_prefix: str = "target"
    target_count: int = 1000
    stuffing_addresses: int = 5
    spraying_accounts: int = 3
    attack_rate: float = 5.0
    mfa_prefix: str = "loadmfa"
    mfa_count: int = 0
    mfa_share: float = 0.2
    workers: int = 1
    arrival_pacing_seconds: float = 2.0

    @property
    def has_admin(self) -> bool:
        return bool(self.admin_username and self.admin_password)

    def seeded_username(self, index: int) -> str:
        return f"{self.user_prefix}{index:06d}"

    def mfa_username(self, index: int) -> str:
        return f"{self.mfa_prefix}{index:06d}"

    def target_username(self, index: int) -> str:
        return f"{self.target_prefix}{index:06d}"

    def unknown_username(self, tag: str) -> str:
        # A "." never occurs in a seeded name ({prefix} + six digits): never an account.
        return f"{self.target_prefix}.{tag}"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> LoadTestConfig:
        password = environ.get("LOADTEST_PASSWORD")
        if not password:
            raise ConfigError(
                "LOADTEST_PASSWORD is not set: it must be the password the users were seeded with "
                "(`litestar users seed`), or let `python -m loadtests run --start-service` do it all"
            )
        try:
            count = int(environ.get("LOADTEST_USER_COUNT", "1000"))
            share = float(environ.get("LOADTEST_WRONG_PASSWORD_SHARE", "0.1"))
            target_count = int(environ.get("LOADTEST_TARGET_COUNT", "1000"))
            addresses = int(environ.get("LOADTEST_STUFFING_ADDRESSES", "5"))
            spraying_accounts = int(environ.get("LOADTEST_SPRAYING_ACCOUNTS", "3"))
            attack_rate = float(environ.get("LOADTEST_ATTACK_RATE", "5"))
            mfa_count = int(environ.get("LOADTEST_MFA_COUNT", "0"))
            mfa_share = float(environ.get("LOADTEST_MFA_SHARE", "0.2"))
            workers = int(environ.get("LOADTEST_WORKERS", "1") or "1")
            pacing = float(environ.get("LOADTEST_ARRIVAL_PACING_SECONDS", DEFAULT_ARRIVAL_PACING_SECONDS))
        except ValueError as exc:
            raise ConfigError(f"LOADTEST_* numbers: {exc}") from exc
        if count < 1:
            raise ConfigError("LOADTEST_USER_COUNT must be at least 1")
        if not 0.0 <= share <= 1.0:
            raise ConfigError("LOADTEST_WRONG_PASSWORD_SHARE must be between 0 and 1")
        if not 1 <= spraying_accounts < target_count:
            # The stuffer takes the targets the sprayer leaves: at least one must be left.
            raise ConfigError("LOADTEST_SPRAYING_ACCOUNTS must be at least 1 and below LOADTEST_TARGET_COUNT")
        if not 1 <= addresses <= MAX_STUFFING_ADDRESSES:
            raise ConfigError(f"LOADTEST_STUFFING_ADDRESSES must be between 1 and {MAX_STUFFING_ADDRESSES}")
        if attack_rate <= 0:
            raise ConfigError("LOADTEST_ATTACK_RATE must be above 0")
        if pacing <= 0:
            raise ConfigError("LOADTEST_ARRIVAL_PACING_SECONDS must be above 0")
        if mfa_count < 0 or not 0.0 <= mfa_share <= 1.0:
            raise ConfigError("LOADTEST_MFA_COUNT must be 0 or more and LOADTEST_MFA_SHARE between 0 and 1")
        if workers < 1 or (mfa_count and mfa_count < workers):
            raise ConfigError("LOADTEST_WORKERS must be at least 1 and at most LOADTEST_MFA_COUNT")
        config = cls(
            password=password,
            user_prefix=environ.get("LOADTEST_USER_PREFIX", "loadtest"),
            user_count=count,
            admin_username=environ.get("LOADTEST_ADMIN_USERNAME") or None,
            admin_password=environ.get("LOADTEST_ADMIN_PASSWORD") or None,
            wrong_password_share=share,
            mix=parse_mix(environ.get("LOADTEST_MIX", "")),
            target_prefix=environ.get("LOADTEST_TARGET_PREFIX", "target"),
            target_count=target_count,
            stuffing_addresses=addresses,
            spraying_accounts=spraying_accounts,
            attack_rate=attack_rate,
            mfa_prefix=environ.get("LOADTEST_MFA_PREFIX", "loadmfa"),
            mfa_count=mfa_count,
            mfa_share=mfa_share,
            workers=workers,
            arrival_pacing_seconds=pacing,
        )
        if config.mix and config.mix.get("AdminBrowser", 0) > 0 and not config.has_admin:
            raise ConfigError("AdminBrowser is in LOADTEST_MIX but LOADTEST_ADMIN_USERNAME/PASSWORD are not set")
        return config


def parse_mix(text: str) -> dict[str, int] | None:
    """``"ApiClient=6, LoginStorm=2"`` -> {"ApiClient": 6, "LoginStorm": 2}; "" -> None."""
    if not text.strip():
        return None
    mix: dict[str, int] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        match = re.fullmatch(r"(\w+)\s*=\s*(\d+)", part)
        if not match or match.group(1) not in USER_CLASSES:
            raise ConfigError(f"LOADTEST_MIX: {part!r} is not CLASS=WEIGHT with CLASS one of {', '.join(USER_CLASSES)}")
        mix[match.group(1)] = int(match.group(2))
    if not any(mix.values()):
        raise ConfigError("LOADTEST_MIX gives every class weight 0")
    return mix


def mix_to_env(mix: Mapping[str, int]) -> str:
    return ",".join(f"{name}={weight}" for name, weight in mix.items())
