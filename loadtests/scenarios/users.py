"""The traffic: four kinds of client, each a Locust user class (tags in brackets).

- ``LoginStorm`` [login-storm, hashing]: fresh logins of random seeded users, the argon2
  verify path; a share of them with a wrong password, and a share (``LOADTEST_MFA_SHARE``
  of accounts seeded ``--with-totp``) with both steps of a second factor.
- ``ApiClient`` [api-client; hashing on its re-login]: logs in once, then mostly
  ``GET /users/me`` and refreshes (each spending the old refresh token), and now and then
  logs in again and ends the old session.
- ``SignUp`` [sign-up, hashing]: registers new unique users, the argon2 hash path.
- ``AdminBrowser`` [admin]: logs in as the admin, pages, filters and searches the user
  list, opens single users.

``locust --tags hashing`` runs only what hashes; ``--tags api-client`` only the API client.
Weights are the class defaults below, or ``LOADTEST_MIX`` (see ``config.py``).

Each request carries a simulated client address in ``X-Forwarded-For`` (``addresses.py``):
ApiClient and AdminBrowser keep one per user, LoginStorm and SignUp take a new one per
request, so the service's per-address rate limits see people, not one load generator.
The attackers are in ``attacks.py``.
"""

from __future__ import annotations

import random
import secrets
import time
from typing import Any

from locust import between, tag, task

from loadtests.scenarios import names
from loadtests.scenarios.accounting import Verdict, back_off, require_fields, settle
from loadtests.scenarios.base import ServiceUser, Tokens


class LoginStorm(ServiceUser):
    """Everyone logging in at once (after an outage, at 9 a.m.): nothing but fresh logins."""

    weight = 2
    wait_time = between(0.5, 1.5)
    address_per_request = True  # each login of the storm is another person

    @tag("login-storm", "hashing")
    @task
    def fresh_login(self) -> None:
        if self.second_factor_now():
            self.login_with_second_factor()
            return
        username = self.random_seeded_username()
        if self.wrong_password_now():
            self.login_with_wrong_password(username)
        else:
            self.login(username, self.cfg.password)


class LoginArrivals(ServiceUser):
    """Logins that arrive at a set rate whatever the service answers: a crowd of
    independent people, an open loop. Each user is a Poisson process of logins with a mean
    gap of ``LOADTEST_ARRIVAL_PACING_SECONDS`` (exponential gaps, started at a random
    offset), so N users offer N ÷ pacing logins/s as a Poisson stream, as independent
    people arrive: constant pacing kept the users in step and sent each second's logins in
    one burst, a queue the service never sees from real clients. A user never backs off
    on a shed; it is a login in flight (as k6's arrival-rate executors have virtual users),
    and a gap shorter than the login it follows starts the next at once, so a pool too
    small for the latency shows as an achieved rate below the offered one. Runs only when
    the mix names it (the ``overload`` and ``login-capacity`` profiles)."""

    weight = 0
    address_per_request = True  # each arrival is another person

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._next_arrival = time.monotonic()
        self.wait_time = self._until_next_arrival  # type: ignore[method-assign]

    def on_start(self) -> None:
        super().on_start()
        # Users spawned together would otherwise arrive together first. (Locust patches
        # time.sleep with gevent's: this user waits, the others run.)
        time.sleep(random.uniform(0, self.cfg.arrival_pacing_seconds))  # noqa: S311 - not crypto
        self._next_arrival = time.monotonic()

    def _until_next_arrival(self) -> float:
        """Seconds to the next arrival of this user's Poisson process (0 if it is due)."""
        gap = random.expovariate(1 / self.cfg.arrival_pacing_seconds)
        now = time.monotonic()
        self._next_arrival = max(self._next_arrival + gap, now)
        return self._next_arrival - now

    @tag("arrivals", "hashing")
    @task
    def arrive(self) -> None:
        username = self.random_seeded_username()
        if self.wrong_password_now():
            self.login_with_wrong_password(username, back_off_when_shed=False)
        else:
            self.login(username, self.cfg.password, back_off_when_shed=False)


class ApiClient(ServiceUser):
    """A signed-in app: reads its user, keeps its session alive, sometimes signs in again."""

    weight = 6
    wait_time = between(0.5, 2.0)

    def on_start(self) -> None:
        self.username = self.random_seeded_username()
        self.authenticated(self.username, self.cfg.password)

    @tag("api-client")
    @task(10)
    def read_me(self) -> None:
        tokens = self.authenticated(self.username, self.cfg.password)
        if tokens is None:
            return
        with self.client.get(
            names.ME, headers=self.headers(tokens.headers), name=names.ME, catch_response=True
        ) as response:
            verdict = settle(response, expected={200})
            body = require_fields(response, "id", "username", "role") if verdict is Verdict.OK else None
            if body and body["username"].lower() != self.username.lower():
                response.failure("GET /users/me answered another user")
        if verdict is Verdict.FAILED:
            self.tokens = None  # start over with a fresh login

    @tag("api-client")
    @task(3)
    def refresh_session(self) -> None:
        tokens = self.authenticated(self.username, self.cfg.password)
        if tokens is not None:
            self.tokens = self.refresh(tokens)

    @tag("api-client", "hashing")
    @task(1)
    def sign_in_again(self) -> None:
        """Log in again (a new device, an app restart), then end the old session."""
        if self.wrong_password_now():
            self.login_with_wrong_password(self.username)  # a typo: the session it has stays
            return
        fresh = self.login(self.username, self.cfg.password)
        if fresh is None:
            return
        if self.tokens is not None:
            self.logout(self.tokens)
        self.tokens = fresh


class SignUp(ServiceUser):
    """New users registering: each one a unique name and its own password to hash."""

    weight = 1
    wait_time = between(1.0, 3.0)
    address_per_request = True  # each sign-up is another person

    @tag("sign-up", "hashing")
    @task
    def register(self) -> None:
        # prefix + "-su-" + 12 hex: unique across workers and reruns, within 32 characters.
        username = f"{self.cfg.user_prefix[:12]}-su-{secrets.token_hex(6)}"
        body = {
            "username": username,
            "email": f"{username}@example.com",
            "password": secrets.token_urlsafe(12),
            "full_name": "Load Test",
        }
        with self.client.post(
            names.REGISTER, json=body, headers=self.headers(), name=names.REGISTER, catch_response=True
        ) as response:
            verdict = settle(response, expected={201})
            if verdict is Verdict.OK:
                require_fields(response, "id", "username")
        if verdict is Verdict.SHED:
            back_off(response)


class AdminBrowser(ServiceUser):
    """An administrator in the back office: pages through users, filters, searches, opens one."""

    weight = 1
    wait_time = between(1.0, 3.0)

    def on_start(self) -> None:
        self.total = 0
        self.seen_ids: list[str] = []
        # Opening the back office: the first page and a look-up, once each. The tasks below
        # are drawn at random, and a 30 s smoke run with two admins once drew no search at
        # all (p = 0.8^26), failing the gate that every endpoint is seen.
        self.page()
        self.search()

    def admin_tokens(self) -> Tokens | None:
        username, password = self.cfg.admin_username, self.cfg.admin_password
        if not username or not password:
            raise RuntimeError("AdminBrowser needs LOADTEST_ADMIN_USERNAME and LOADTEST_ADMIN_PASSWORD")
        return self.authenticated(username, password)

    def list_users(self, params: dict[str, str], name: str) -> None:
        tokens = self.admin_tokens()
        if tokens is None:
            return
        with self.client.get(
            names.USERS, params=params, headers=self.headers(tokens.headers), name=name, catch_response=True
        ) as response:
            verdict = settle(response, expected={200})
            page = require_fields(response, "items", "total", "limit", "offset") if verdict is Verdict.OK else None
        if page:
            if name == names.USERS:
                self.total = int(page["total"])
            self.seen_ids = [str(item["id"]) for item in page["items"]][:20] or self.seen_ids
        elif verdict is Verdict.FAILED:
            self.tokens = None

    @tag("admin")
    @task(4)
    def page(self) -> None:
        limit = 20
        offset = random.randint(0, max(self.total - limit, 0))  # noqa: S311 - not crypto
        self.list_users({"limit": str(limit), "offset": str(offset)}, names.USERS)

    @tag("admin")
    @task(2)
    def filter_plain_active_users(self) -> None:
        self.list_users({"role": "user", "is_active": "true", "limit": "50"}, names.USERS_FILTER)

    @tag("admin")
    @task(2)
    def search(self) -> None:
        # A prefix of seeded names, e.g. "loadtest0042": matches up to ten users.
        number = random.randint(0, self.cfg.user_count // 10)  # noqa: S311 - not crypto
        self.list_users({"q": f"{self.cfg.user_prefix}{number:05d}", "limit": "20"}, names.USERS_SEARCH)

    @tag("admin")
    @task(2)
    def open_user(self) -> None:
        tokens = self.admin_tokens()
        if tokens is None or not self.seen_ids:
            return
        user_id = random.choice(self.seen_ids)  # noqa: S311 - not crypto
        with self.client.get(
            f"{names.USERS}/{user_id}", headers=self.headers(tokens.headers), name=names.USER, catch_response=True
        ) as response:
            if settle(response, expected={200}) is Verdict.OK:
                require_fields(response, "id", "username", "email")
