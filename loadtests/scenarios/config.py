"""What the scenarios read from the environment (the runner sets all of it).

| variable | meaning | default |
|---|---|---|
| ``LOADTEST_PASSWORD`` | password of the seeded users | required |
| ``LOADTEST_USER_PREFIX`` | seeded usernames are ``{prefix}{i:06d}`` | ``loadtest`` |
| ``LOADTEST_USER_COUNT`` | how many were seeded (i = 1..count) | ``1000`` |
| ``LOADTEST_ADMIN_USERNAME`` / ``_PASSWORD`` | the admin AdminBrowser logs in as | AdminBrowser off |
| ``LOADTEST_WRONG_PASSWORD_SHARE`` | share of logins sent with a wrong password | ``0.1`` |
| ``LOADTEST_MIX`` | weights by class, ``ApiClient=6,LoginStorm=2``; unnamed classes do not run | class defaults |
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

USER_CLASSES = ("LoginStorm", "ApiClient", "SignUp", "AdminBrowser")


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

    @property
    def has_admin(self) -> bool:
        return bool(self.admin_username and self.admin_password)

    def seeded_username(self, index: int) -> str:
        return f"{self.user_prefix}{index:06d}"

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
        except ValueError as exc:
            raise ConfigError(f"LOADTEST_USER_COUNT / LOADTEST_WRONG_PASSWORD_SHARE: {exc}") from exc
        if count < 1:
            raise ConfigError("LOADTEST_USER_COUNT must be at least 1")
        if not 0.0 <= share <= 1.0:
            raise ConfigError("LOADTEST_WRONG_PASSWORD_SHARE must be between 0 and 1")
        config = cls(
            password=password,
            user_prefix=environ.get("LOADTEST_USER_PREFIX", "loadtest"),
            user_count=count,
            admin_username=environ.get("LOADTEST_ADMIN_USERNAME") or None,
            admin_password=environ.get("LOADTEST_ADMIN_PASSWORD") or None,
            wrong_password_share=share,
            mix=parse_mix(environ.get("LOADTEST_MIX", "")),
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
