"""Attacks on the login path, as Locust user classes (tags in brackets).

- ``CredentialStuffer`` [stuffing, attack]: walks a combo list from a pool of
  ``LOADTEST_STUFFING_ADDRESSES`` addresses: many names, half of them accounts that exist,
  half unknown, each tried with a few common passwords. No name gets more failures than
  the per-account throttle forgives, so what stands in its way is the per-address rate
  limit (and, beyond the hashing capacity, shedding).
- ``PasswordSprayer`` [spraying, attack]: a few names (``LOADTEST_SPRAYING_ACCOUNTS``
  accounts that exist and as many that do not), one common password after another,
  every attempt from a new address. A per-address limit never sees an address twice;
  what stops it is the per-account throttle.

The attacked accounts are seeded apart from the legitimate users
(``LOADTEST_TARGET_PREFIX``), so the legitimate traffic in the same run measures what the
attack costs everyone else through shared capacity, not a throttle the attack set on
its own account. Attackers do not back off and do not wait for answers: each one sends
``LOADTEST_ATTACK_RATE`` attempts a second whatever Retry-After says and however slow the
service gets (up to ``MAX_IN_FLIGHT`` outstanding), as bots do; a closed loop would let a
slow service pace its own attacker.

Every attempt is recorded as ``<attack> <outcome>`` (names.py): ``[refused]`` (401, one
argon2 verify spent), ``[rate-limited]`` / ``[throttled]`` (the two 429s, no hash spent),
``[shed]`` (503, no hash spent). Those are successes: the service answering an attack as
designed. A ``[logged in]`` is a failure (the attackers never know a password, and
seeded passwords cannot be common ones: seeding refuses them), as is anything else.

The classes have weight 0: they run only when ``LOADTEST_MIX`` (a profile's ``mix``)
names them.
"""

from __future__ import annotations

import itertools
import random
import secrets
from collections.abc import Iterator
from typing import Any

# gevent (Locust's own event loop) ships no type hints, and types-gevent is not a dependency.
import gevent.pool  # type: ignore[import-untyped]
from locust import constant_throughput, tag, task
from locust.contrib.fasthttp import ResponseContextManager

from loadtests.scenarios import addresses, names
from loadtests.scenarios.accounting import problem_type, retry_after
from loadtests.scenarios.base import ServiceUser

# What combo lists and spraying tools try first. The service's password policy refuses
# every one of them (too short or too common), at registration and when seeding, so no
# account under attack has one and an attacker's 200 can only mean a broken login.
COMMON_PASSWORDS = (
    "123456",
    "password",
    "123456789",
    "qwerty123",
    "iloveyou",
    "letmein1",
    "trustno1",
    "Password1",
    "welcome1",
    "abc12345",
)
PASSWORDS_PER_NAME = 3  # below the throttle's 5 free failures: a stuffer's list, not a brute force
KNOWN_NAME_SHARE = 0.5
# Attempts one attacking user has outstanding at most; beyond that it waits for a slot (so
# a stalled service does not pile up greenlets without bound).
MAX_IN_FLIGHT = 20


def settle_attempt(response: ResponseContextManager, attack: str) -> str | None:
    """Record an attacker's login under ``<attack> <outcome>``; the outcome, or None for a failure."""
    outcome = names.attack_outcome(response.status_code, problem_type(response), retry_after(response) is not None)
    if outcome is not None:
        response.request_meta["name"] = attack + outcome
        response.success()
    elif response.status_code == 200:
        response.request_meta["name"] = attack + names.LOGGED_IN
        response.failure("an attacker's guess logged in")
    elif not response.status_code:
        response.failure(f"connection error: {type(getattr(response, 'error', None)).__name__}")
    else:
        response.failure(f"unexpected {response.status_code} {problem_type(response) or '(no problem type)'}")
    return outcome


class Attacker(ServiceUser):
    """An attacker: attempts at a fixed rate without waiting for answers, no back-off,
    its own addresses."""

    abstract = True
    weight = 0
    concurrency = MAX_IN_FLIGHT  # FastHttpUser's connections per user

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._pacing = constant_throughput(self.cfg.attack_rate)
        self._in_flight = gevent.pool.Pool(MAX_IN_FLIGHT)

    def wait_time(self) -> float:
        # A method, not a class attribute: the rate is configuration, read at run time.
        return self._pacing(self)

    def on_stop(self) -> None:
        # Attempts still in flight when the run ends are dropped, not recorded.
        self._in_flight.kill(block=False)

    def launch(self, attack: str, username: str, password: str) -> None:
        """Send one attempt and return at once (blocks only while MAX_IN_FLIGHT are out)."""
        self._in_flight.spawn(self._attempt_or_report, attack, username, password)

    def _attempt_or_report(self, attack: str, username: str, password: str) -> None:
        try:
            self.attempt(attack, username, password)
        except Exception as exc:  # noqa: BLE001 - off the task's greenlet: report it as Locust reports a task's
            self.environment.events.user_error.fire(user_instance=self, exception=exc, tb=exc.__traceback__)

    def attempt(self, attack: str, username: str, password: str) -> None:
        with self.client.post(
            names.LOGIN,
            json={"username": username, "password": password},
            headers=self.headers(),
            name=attack,
            catch_response=True,
        ) as response:
            settle_attempt(response, attack)


class CredentialStuffer(Attacker):
    """Many names, a few passwords each, from a fixed pool of addresses."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.pool = addresses.address_pool(addresses.STUFFERS, self.cfg.stuffing_addresses)
        self.combos = self.combo_list()

    def forwarded_for(self) -> str:
        return random.choice(self.pool)  # noqa: S311 - not crypto

    def next_name(self) -> str:
        if random.random() < KNOWN_NAME_SHARE:  # noqa: S311 - not crypto
            # The targets the sprayer leaves alone, so each attack's outcomes are its own.
            first = self.cfg.spraying_accounts + 1
            return self.cfg.target_username(random.randint(first, self.cfg.target_count))  # noqa: S311 - not crypto
        return self.cfg.unknown_username(secrets.token_hex(5))

    def combo_list(self) -> Iterator[tuple[str, str]]:
        while True:
            username = self.next_name()
            for password in random.sample(COMMON_PASSWORDS, PASSWORDS_PER_NAME):
                yield username, password

    @tag("stuffing", "attack")
    @task
    def try_combo(self) -> None:
        username, password = next(self.combos)
        self.launch(names.STUFFING, username, password)


class PasswordSprayer(Attacker):
    """A few names, one common password after another, each attempt from a new address."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        count = self.cfg.spraying_accounts
        # The same names on every worker: the targets' seeded names and fixed unknown ones.
        self.victims = [self.cfg.target_username(i) for i in range(1, count + 1)]
        self.victims += [self.cfg.unknown_username(f"nobody{i}") for i in range(1, count + 1)]
        self.sprays = self.spray_list()

    def forwarded_for(self) -> str:
        return addresses.random_address(addresses.SPRAYERS)

    def spray_list(self) -> Iterator[tuple[str, str]]:
        for password in itertools.cycle(COMMON_PASSWORDS):
            for username in random.sample(self.victims, len(self.victims)):
                yield username, password

    @tag("spraying", "attack")
    @task
    def spray(self) -> None:
        username, password = next(self.sprays)
        self.launch(names.SPRAYING, username, password)
