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
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from app import __version__
from app.db.config import database_config
from app.identity.password_policy import BreachedPasswordChecker
from app.identity.passwords import PasswordHasher
from app.identity.throttle import DatabaseThrottleStore, LoginThrottle, RedisThrottleStore, ThrottleStore
from app.identity.throttle_failover import FailoverThrottleStore
from app.identity.tokens import TokenIssuer
from app.identity.totp import SecretBox
from app.mail.transports import FileTransport, SmtpTransport, build_transport
from app.mail.worker import OutboxWorker
from app.observability.events import SecurityEvents
from app.observability.setup import Observability, build_observability
from app.observability.shared_store import SharedStoreHealth
from app.settings import Environment, Settings
from app.system.health import Lifecycle
from app.web.shared_store import FailoverStore

# Redis runs next to the service (same cluster, sub-millisecond answers): half a second
# without a connection or an answer means it is away, and the request is served by the
# fallback instead of waiting. One immediate retry covers a pooled connection that Redis
# closed (a restart); redis-py's default (10 retries with back-off) would hold a request
# for seconds on a dead Redis.
REDIS_TIMEOUT_SECONDS = 0.5


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
        "mfa_box",
        "observability",
        "rate_limit_store",
        "redis",
        "settings",
        "shared_store_health",
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
        shared_store_health: SharedStoreHealth | None,
        lifecycle: Lifecycle,
        mail_transport: SmtpTransport | FileTransport,
        mfa_box: SecretBox,
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
        # Whether that Redis answers (None without one); the lifespan probes it.
        self.shared_store_health = shared_store_health
        self.lifecycle = lifecycle
        # How the outbox's mail leaves (SMTP, or files without an SMTP host).
        self.mail_transport = mail_transport
        # Encrypts the TOTP secrets at rest; its keys are read once, at start-up, so a
        # missing or unreadable key file stops the start instead of the first enrolment.
        self.mfa_box = mfa_box

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
    database_throttle = DatabaseThrottleStore(database.get_engine(), settings.login_throttle)
    redis: Redis | None = None
    health: SharedStoreHealth | None = None
    if settings.redis_url is not None:
        redis = Redis.from_url(
            settings.redis_url.get_secret_value(),
            socket_connect_timeout=REDIS_TIMEOUT_SECONDS,
            socket_timeout=REDIS_TIMEOUT_SECONDS,
            retry=Retry(NoBackoff(), retries=1),
        )
        health = SharedStoreHealth(observability.events)
        # Redis down: rate limits fail open to this process's memory, the throttle fails
        # over to PostgreSQL (the reasons are in the two modules' docstrings).
        rate_limit_store: Store = FailoverStore(
            RedisStore(redis, namespace="user-service:rate-limit"), MemoryStore(), health
        )
        throttle_store: ThrottleStore = FailoverThrottleStore(
            RedisThrottleStore(redis, settings.login_throttle), database_throttle, health
        )
    else:
        rate_limit_store = MemoryStore()
        throttle_store = database_throttle
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
        shared_store_health=health,
        lifecycle=_watched_lifecycle(observability),
        mail_transport=build_transport(settings.mail),
        mfa_box=SecretBox.from_settings(settings.mfa),
    )


def _watched_lifecycle(observability: Observability) -> Lifecycle:
    lifecycle = Lifecycle()
    lifecycle.readiness_observers.append(observability.readiness_changed)
    return lifecycle


def _report_hashing(hasher: PasswordHasher, observability: Observability) -> None:
    """The hashing pool's hooks, connected to metrics and traces."""
    hasher.observers.append(observability.hash_finished)
    hasher.load_observers.append(observability.hash_load)
    hasher.rejection_observers.append(observability.hash_shed)
    observability.hashing_pool(hasher.pool_size, hasher.queue_size)


def container_of(app: Litestar) -> Container:
    """The container of an app made by ``create_app`` (for the CLI, which is handed the app)."""
    container = getattr(app, "container", None)
    if not isinstance(container, Container):
        raise TypeError("this Litestar app was not built by app.main.create_app")
    return container
