"""The user service's Locust scenarios, for the headless runner and the web UI alike.

    uv run locust -f loadtests/locustfile.py --host http://127.0.0.1:8000     # web UI on :8089
    uv run python -m loadtests run --profile smoke --start-service            # headless, with gates

The user classes live in ``loadtests/scenarios/users.py`` (LoginStorm, ApiClient, SignUp,
AdminBrowser) and ``loadtests/scenarios/attacks.py`` (CredentialStuffer, PasswordSprayer:
they run only when ``LOADTEST_MIX`` names them); configuration is environment variables
(``loadtests/scenarios/config.py``): at least ``LOADTEST_PASSWORD``, the password of users
seeded with ``litestar users seed``. With ``LOADTEST_SHAPE=step`` the capacity profile's
step load (``loadtests/shapes.py``) drives the run instead of ``--users``.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from locust import events
from locust.env import Environment

from loadtests import locust_metrics  # noqa: F401 - serves Locust's figures with LOADTEST_METRICS_PORT
from loadtests.scenarios.attacks import CredentialStuffer, PasswordSprayer
from loadtests.scenarios.base import config
from loadtests.scenarios.config import ConfigError
from loadtests.scenarios.users import AdminBrowser, ApiClient, LoginArrivals, LoginStorm, SignUp

__all__ = ["AdminBrowser", "ApiClient", "CredentialStuffer", "LoginArrivals", "LoginStorm", "PasswordSprayer", "SignUp"]

try:
    _config = config()
except ConfigError as exc:
    raise SystemExit(f"loadtests: {exc}") from None


def _apply_mix() -> None:
    """Weights from LOADTEST_MIX (weight 0: Locust leaves the class out). In a function,
    not at module level: Locust takes every User class bound to a module-level name."""
    classes = {
        cls.__name__: cls
        for cls in (LoginStorm, ApiClient, SignUp, AdminBrowser, CredentialStuffer, PasswordSprayer, LoginArrivals)
    }
    if _config.mix is not None:
        for name, cls in classes.items():
            cls.weight = _config.mix.get(name, 0)
    elif not _config.has_admin:
        logging.getLogger("loadtests").warning("no LOADTEST_ADMIN_USERNAME/PASSWORD: AdminBrowser does not run")
        AdminBrowser.weight = 0


_apply_mix()

if os.environ.get("LOADTEST_SHAPE") == "step":
    from loadtests.shapes import StepLoad

    __all__ += ["StepLoad"]


def _drop_classes_without_tasks(environment: Environment, **_: Any) -> None:
    """``--tags`` filters tasks, not classes: a class left with no task would fail to start,
    so it is taken out of the mix (``--tags hashing`` runs LoginStorm, SignUp and the
    ApiClient's re-login)."""
    left = [cls for cls in environment.user_classes if cls.tasks]
    if left and len(left) != len(environment.user_classes):
        environment.user_classes[:] = left


events.test_start.add_listener(_drop_classes_without_tasks)
