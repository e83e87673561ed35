"""The named load profiles of ``loadtests/profiles.toml``, parsed and checked.

No Locust import here: the runner reads profiles and turns them into Locust's command
line and the ``LOADTEST_*`` environment the locustfile reads.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from loadtests.scenarios.config import USER_CLASSES, mix_to_env

PROFILES_FILE = Path(__file__).with_name("profiles.toml")

# [profile.step] key -> the variable loadtests/shapes.py reads
STEP_KEYS = {
    "start_users": "LOADTEST_STEP_START_USERS",
    "step_users": "LOADTEST_STEP_USERS",
    "step_seconds": "LOADTEST_STEP_SECONDS",
    "settle_seconds": "LOADTEST_STEP_SETTLE_SECONDS",
    "spawn_rate": "LOADTEST_STEP_SPAWN_RATE",
    "max_users": "LOADTEST_STEP_MAX_USERS",
    # Set by a step load by rate: the open-loop pacing, read by LoginArrivals and by the
    # shape (offered logins/s = users / pacing).
    "pacing_seconds": "LOADTEST_ARRIVAL_PACING_SECONDS",
    "stop_shed_ratio": "LOADTEST_STOP_SHED_RATIO",
    "stop_error_ratio": "LOADTEST_STOP_ERROR_RATIO",
    "stop_p95_ms": "LOADTEST_STOP_P95_MS",
    "stop_p95_request": "LOADTEST_STOP_P95_REQUEST",
}
PROFILE_KEYS = {
    "description",
    "users",
    "spawn_rate",
    "run_time",
    "seed_users",
    "mfa_users",
    "mfa_share",
    "wrong_password_share",
    "mix",
    "tags",
    "step",
}


class ProfileError(ValueError):
    pass


def parse_duration(text: str) -> float:
    """ "90s", "5m", "1h30m", "45" (seconds) -> seconds."""
    match = re.fullmatch(r"\s*(?:(\d+)h)?\s*(?:(\d+)m)?\s*(?:(\d+)s?)?\s*", text)
    if not match or not any(match.groups()):
        raise ProfileError(f"not a duration: {text!r} (use e.g. 30s, 5m, 1h30m)")
    hours, minutes, seconds = (int(g or 0) for g in match.groups())
    return float(hours * 3600 + minutes * 60 + seconds)


@dataclass(frozen=True, slots=True)
class Profile:
    name: str
    description: str = ""
    users: int = 10
    spawn_rate: float = 2.0
    run_time_seconds: float = 30.0
    seed_users: int = 1000
    mfa_users: int = 0  # accounts seeded --with-totp for LoginStorm's second-factor logins
    mfa_share: float | None = None
    wrong_password_share: float | None = None
    mix: dict[str, int] = field(default_factory=dict)
    tags: list[str] = field(default_factory=list)
    step: dict[str, str] = field(default_factory=dict)  # LOADTEST_* variable -> value

    @property
    def is_step_load(self) -> bool:
        return bool(self.step)

    @property
    def expected_seconds(self) -> float:
        """How long the load runs at most (the step load: every step up to max_users)."""
        if not self.is_step_load:
            return self.run_time_seconds
        start = int(self.step.get("LOADTEST_STEP_START_USERS", "5"))
        increment = max(int(self.step.get("LOADTEST_STEP_USERS", "5")), 1)
        maximum = int(self.step.get("LOADTEST_STEP_MAX_USERS", "100"))
        steps = max((maximum - start) // increment + 1, 1)
        return steps * float(self.step.get("LOADTEST_STEP_SECONDS", "30"))

    def locust_env(self) -> dict[str, str]:
        """What the locustfile needs to know about this profile."""
        env = dict(self.step)
        if self.is_step_load:
            env["LOADTEST_SHAPE"] = "step"
        if self.mix:
            env["LOADTEST_MIX"] = mix_to_env(self.mix)
        if self.wrong_password_share is not None:
            env["LOADTEST_WRONG_PASSWORD_SHARE"] = str(self.wrong_password_share)
        if self.mfa_share is not None:
            env["LOADTEST_MFA_SHARE"] = str(self.mfa_share)
        return env


# [profile.step] keys of a step load by offered rate (open loop, LoginArrivals): the
# engineer names logins/s, each user starts one login every pacing_seconds, so a rate is
# rate x pacing users (loadtests/scenarios/users.py).
RATE_KEYS = frozenset({"start_rate", "step_rate", "max_rate", "pacing_seconds"})


def rate_steps_as_users(name: str, step_table: Mapping[str, Any]) -> dict[str, Any]:
    """The users-per-step table that offers the rates asked for, plus the pacing that makes
    users into logins/s (LOADTEST_ARRIVAL_PACING_SECONDS, and the shape's offered column)."""
    if not RATE_KEYS & set(step_table):
        return dict(step_table)
    if {"start_users", "step_users", "max_users"} & set(step_table):
        raise ProfileError(f"[{name}.step]: give either rates (start_rate ...) or users, not both")
    pacing = float(step_table.get("pacing_seconds", 1.0))
    users = {}
    for rate_key, users_key in (("start_rate", "start_users"), ("step_rate", "step_users"), ("max_rate", "max_users")):
        if rate_key not in step_table:
            raise ProfileError(f"[{name}.step]: a step load by rate needs {rate_key}")
        count = float(step_table[rate_key]) * pacing
        if count < 1 or not count.is_integer():
            raise ProfileError(
                f"[{name}.step]: {rate_key} {step_table[rate_key]} x pacing_seconds {pacing:g} is {count:g} users, "
                "not a whole number of at least 1"
            )
        users[users_key] = int(count)
    rest = {k: v for k, v in step_table.items() if k not in RATE_KEYS}
    return {**rest, **users, "pacing_seconds": pacing}


def parse_profile(name: str, table: Mapping[str, Any]) -> Profile:
    if unknown := set(table) - PROFILE_KEYS:
        raise ProfileError(f"[{name}]: unknown keys {sorted(unknown)}")
    mix = {str(k): int(v) for k, v in table.get("mix", {}).items()}
    if bad := set(mix) - set(USER_CLASSES):
        raise ProfileError(f"[{name}].mix: unknown user classes {sorted(bad)}; known: {', '.join(USER_CLASSES)}")
    step_table = rate_steps_as_users(name, table.get("step", {}))
    if unknown := set(step_table) - set(STEP_KEYS):
        raise ProfileError(f"[{name}.step]: unknown keys {sorted(unknown)}")
    if not step_table and "run_time" not in table:
        raise ProfileError(f"[{name}]: needs run_time (fixed load) or a [{name}.step] table (step load)")
    share = table.get("wrong_password_share")
    mfa_share = table.get("mfa_share")
    return Profile(
        name=name,
        description=str(table.get("description", "")),
        users=int(table.get("users", 10)),
        spawn_rate=float(table.get("spawn_rate", 2.0)),
        run_time_seconds=parse_duration(str(table.get("run_time", "30s"))),
        seed_users=int(table.get("seed_users", 1000)),
        mfa_users=int(table.get("mfa_users", 0)),
        mfa_share=float(mfa_share) if mfa_share is not None else None,
        wrong_password_share=float(share) if share is not None else None,
        mix=mix,
        tags=[str(t) for t in table.get("tags", [])],
        step={STEP_KEYS[k]: str(v) for k, v in step_table.items()},
    )


def load_profiles(path: Path = PROFILES_FILE) -> dict[str, Profile]:
    with path.open("rb") as source:
        document = tomllib.load(source)
    return {name: parse_profile(name, table) for name, table in document.items()}
