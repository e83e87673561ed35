"""The service's collaborators, built once from ``Settings``: one typed object that the
dependency providers, the lifespan and the CLI all take from.

Built by ``build_container`` and nowhere else; nothing here is a module-level singleton,
so a test that builds two apps gets two independent sets.
"""

from __future__ import annotations

from advanced_alchemy.extensions.litestar import SQLAlchemyAsyncConfig
from litestar import Litestar
from litestar.stores.base import Store
from litestar.stores.memory import MemoryStore
from litestar.stores.redis import RedisStore
from opentelemetry.sdk.trace import TracerProvider
from redis.asyncio import Redis

from app import __version__
from app.db.config import database_config
from app.identity.password_policy import BreachedPasswordChecker
from app.identity.passwords import PasswordHasher
from app.identity.throttle import DatabaseThrottleStore, LoginThrottle, RedisThrottleStore
from app.identity.tokens import TokenIssuer
from app.mail.transports import FileTransport, SmtpTransport, build_transport
from app.mail.worker import OutboxWorker
from app.observability.events import SecurityEvents
from app.observability.setup import Observability, build_observability
from app.settings import Environment, Settings
from app.system.health import Lifecycle


class Container:
    """Not a dataclass on purpose: Litestar validates a dataclass-typed dependency field by
    field on every request it is injected into; a plain class is handed over as it is."""

    __slots__ = (
        "breach_checker",
        "database",
        "hasher",
        "lifecycle",
        "login_throttle",
        "mail_transport",
        "observability",
        "rate_limit_store",
        "redis",
        "settings",
        "tokens",
    )

    def __init__(
        self,
        *,
        settings: Settings,
        database: SQLAlchemyAsyncConfig,
        observability: Observability,
        hasher: PasswordHasher,
        tokens: TokenIssuer,
        breach_checker: BreachedPasswordChecker,
        login_throttle: LoginThrottle,
        rate_limit_store: Store,
        redis: Redis | None,
        lifecycle: Lifecycle,
        mail_transport: SmtpTransport | FileTransport,
    ) -> None:
        self.settings = settings
        self.database = database
        self.observability = observability
        self.hasher = hasher
        self.tokens = tokens
        self.breach_checker = breach_checker
        self.login_throttle = login_throttle
        # Per-address rate-limit counters (Litestar's store) and, when configured, the
        # Redis that holds them and the login throttle for every replica.
        self.rate_limit_store = rate_limit_store
        self.redis = redis
        self.lifecycle = lifecycle
        # How the outbox's mail leaves (SMTP, or files without an SMTP host).
        self.mail_transport = mail_transport

    @property
    def events(self) -> SecurityEvents:
        return self.observability.events

    def outbox_worker(self) -> OutboxWorker:
        """A delivery worker for the outbox (the lifespan's, or `litestar mail deliver`'s)."""
        return OutboxWorker(
            self.database.get_engine(), self.mail_transport, self.settings.mail, self.observability.mail
        )


def build_container(settings: Settings, *, tracer_provider: TracerProvider | None = None) -> Container:
    """``tracer_provider`` replaces the OTEL_*-configured one (tests)."""
    observability = build_observability(settings, version=__version__, tracer_provider=tracer_provider)
    database = database_config(settings.db, settings.service_name)
    observability.watch_engine(database.get_engine())
    hasher = PasswordHasher(settings.passwords)
    _report_hashing(hasher, observability)
    redis = Redis.from_url(settings.redis_url.get_secret_value()) if settings.redis_url is not None else None
    if redis is not None:
        rate_limit_store: Store = RedisStore(redis, namespace="user-service:rate-limit")
        throttle_store: RedisThrottleStore | DatabaseThrottleStore = RedisThrottleStore(redis, settings.login_throttle)
    else:
        rate_limit_store = MemoryStore()
        throttle_store = DatabaseThrottleStore(database.get_engine(), settings.login_throttle)
    return Container(
        settings=settings,
        database=database,
        observability=observability,
        hasher=hasher,
        tokens=TokenIssuer(settings.tokens, refuse_development_key=settings.environment is Environment.PRODUCTION),
        breach_checker=BreachedPasswordChecker(settings.passwords),
        login_throttle=LoginThrottle(throttle_store, settings.login_throttle),
        rate_limit_store=rate_limit_store,
        redis=redis,
        lifecycle=Lifecycle(),
        mail_transport=build_transport(settings.mail),
    )


def _report_hashing(hasher: PasswordHasher, observability: Observability) -> None:
    """The hashing pool's hooks, connected to metrics and traces."""
    hasher.observers.append(
        lambda operation, timing: observability.hash_finished(operation, timing.queue_wait_seconds, timing.run_seconds)
    )
    hasher.load_observers.append(observability.hash_load)
    hasher.rejection_observers.append(observability.hash_shed)
    observability.hashing_pool(hasher.pool_size, hasher.queue_size)


def container_of(app: Litestar) -> Container:
    """The container of an app made by ``create_app`` (for the CLI, which is handed the app)."""
    container = getattr(app, "container", None)
    if not isinstance(container, Container):
        raise TypeError("this Litestar app was not built by app.main.create_app")
    return container
