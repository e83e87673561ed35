"""What every scenario user shares: the configuration, tokens, and the auth requests."""

from __future__ import annotations

import functools
import random
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from locust.contrib.fasthttp import FastHttpUser
from locust.env import Environment

from loadtests.scenarios import addresses, names, tracing
from loadtests.scenarios.accounting import Verdict, back_off, problem_type, require_fields, settle
from loadtests.scenarios.config import LoadTestConfig
from loadtests.scenarios.second_factor import SeededFactors

# Refresh this long before the access token expires, as a well-behaved client does.
EXPIRY_MARGIN_SECONDS = 30.0


@functools.cache
def config() -> LoadTestConfig:
    return LoadTestConfig.from_env()


_factors: SeededFactors | None = None


def seeded_factors(environment: Environment) -> SeededFactors:
    """This process's share of the accounts with a second factor. Made on first use: a
    distributed worker learns its index from the master only once it has connected."""
    global _factors  # noqa: PLW0603 - one ledger of used codes per process, by design
    if _factors is None:
        index = int(getattr(environment.runner, "worker_index", 0) or 0)
        _factors = SeededFactors(config(), worker_index=max(index, 0), worker_count=config().workers)
    return _factors


@dataclass(frozen=True, slots=True)
class Tokens:
    access_token: str
    refresh_token: str
    refresh_by: float  # time.monotonic() after which the access token is (nearly) expired

    @classmethod
    def of(cls, body: dict[str, Any]) -> Tokens:
        lifetime = float(body["expires_in"])
        return cls(
            access_token=str(body["access_token"]),
            refresh_token=str(body["refresh_token"]),
            refresh_by=time.monotonic() + max(lifetime - EXPIRY_MARGIN_SECONDS, lifetime / 2),
        )

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.access_token}"}

    @property
    def stale(self) -> bool:
        return time.monotonic() >= self.refresh_by


class ServiceUser(FastHttpUser):
    """A client of the user service. Subclasses add the tasks; this holds the auth calls."""

    abstract = True
    # The service sheds rather than queueing forever; a request that takes this long is
    # a failure worth seeing (a connection timeout is counted as one).
    network_timeout = 30.0
    connection_timeout = 10.0
    # The simulated client address (X-Forwarded-For, see addresses.py) that the service's
    # per-address rate limits count: one per user (a person on a device), or, for the
    # classes where every request is another person (a login storm, a wave of sign-ups),
    # a new one per request.
    address_per_request = False

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        tracing.instrument(self.client)  # with --otel: each request the parent of the service's span
        self.cfg = config()
        self.tokens: Tokens | None = None
        self.address = addresses.random_address(addresses.PEOPLE)
        # The wrong-password share as a running balance rather than a coin per login: each
        # user sends its share to within one login (a 30 s smoke run once drew none in ~35
        # coins and failed its gate), starting at a random point so users are not in step.
        self._wrong_password_balance = random.random()  # noqa: S311 - not crypto

    def forwarded_for(self) -> str:
        return addresses.random_address(addresses.PEOPLE) if self.address_per_request else self.address

    def headers(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        """What every request sends: the simulated address, plus ``extra`` (Authorization)."""
        return {addresses.HEADER: self.forwarded_for(), **(extra or {})}

    def random_seeded_username(self) -> str:
        return self.cfg.seeded_username(random.randint(1, self.cfg.user_count))  # noqa: S311 - not crypto

    def wrong_password_now(self) -> bool:
        self._wrong_password_balance += self.cfg.wrong_password_share
        if self._wrong_password_balance < 1:
            return False
        self._wrong_password_balance -= 1
        return True

    def second_factor_now(self) -> bool:
        return self.cfg.mfa_count > 0 and random.random() < self.cfg.mfa_share  # noqa: S311 - not crypto

    def login(self, username: str, password: str, *, back_off_when_shed: bool = True) -> Tokens | None:
        """POST /login expecting 200; None when shed (after backing off, unless told not
        to: an arrival in an open loop does not) or failed."""
        with self.client.post(
            names.LOGIN,
            json={"username": username, "password": password},
            headers=self.headers(),
            name=names.LOGIN,
            catch_response=True,
        ) as response:
            verdict = settle(response, expected={200})
            body = (
                require_fields(response, "access_token", "refresh_token", "expires_in")
                if verdict is Verdict.OK
                else None
            )
        if verdict is Verdict.SHED and back_off_when_shed:
            back_off(response)
        return Tokens.of(body) if body else None

    def login_with_second_factor(self) -> Tokens | None:
        """Both steps of a login with a second factor, as an app with an authenticator does:
        the password (403 ``mfa-required`` and an ``mfa_token``), then a code at
        ``/login/mfa``. None when shed, failed, or no seeded account had a code left."""
        factors = seeded_factors(self.environment)
        username = factors.pick()
        if username is None:
            return None
        with self.client.post(
            names.LOGIN,
            json={"username": username, "password": self.cfg.password},
            headers=self.headers(),
            name=names.LOGIN_MFA_REQUIRED,
            catch_response=True,
        ) as response:
            verdict = settle(response, expected={403})
            challenge = None
            if verdict is Verdict.OK:
                if problem_type(response) == names.MFA_REQUIRED_PROBLEM:
                    challenge = require_fields(response, "mfa_token")
                else:
                    response.failure(f"403 {problem_type(response) or '(no problem type)'}, not mfa-required")
        if verdict is Verdict.SHED:
            back_off(response)
        code = factors.code(username) if challenge else None
        if challenge is None or code is None:
            return None
        return self._exchange(names.LOGIN_MFA, {"mfa_token": challenge["mfa_token"], "code": code})

    def login_with_wrong_password(self, username: str, *, back_off_when_shed: bool = True) -> None:
        """POST /login with a wrong password: the expected 401 is a success under its own name."""
        body = {"username": username, "password": f"wrong-{secrets.token_hex(6)}"}
        with self.client.post(
            names.LOGIN, json=body, headers=self.headers(), name=names.LOGIN_WRONG_PASSWORD, catch_response=True
        ) as response:
            verdict = settle(response, expected={401})
        if verdict is Verdict.SHED and back_off_when_shed:
            back_off(response)

    def refresh(self, tokens: Tokens) -> Tokens | None:
        """Rotate: the old refresh token is spent by this call, whatever it answers."""
        return self._exchange(names.REFRESH, {"refresh_token": tokens.refresh_token})

    def _exchange(self, path: str, body: dict[str, str]) -> Tokens | None:
        """POST ``body`` to an endpoint that answers a token pair (a refresh, a login's
        second step): the new tokens, or None when it did not answer 200 with them."""
        with self.client.post(path, json=body, headers=self.headers(), name=path, catch_response=True) as response:
            ok = settle(response, expected={200}) is Verdict.OK
            answer = require_fields(response, "access_token", "refresh_token", "expires_in") if ok else None
        return Tokens.of(answer) if answer else None

    def logout(self, tokens: Tokens) -> None:
        with self.client.post(
            names.LOGOUT,
            json={"refresh_token": tokens.refresh_token},
            headers=self.headers(),
            name=names.LOGOUT,
            catch_response=True,
        ) as response:
            settle(response, expected={204})

    def authenticated(self, username: str, password: str) -> Tokens | None:
        """Tokens that are good for the next request: log in if there are none, refresh
        them (spending the old refresh token) shortly before the access token expires."""
        if self.tokens is not None and self.tokens.stale:
            self.tokens = self.refresh(self.tokens)
        if self.tokens is None:
            self.tokens = self.login(username, password)
        return self.tokens
