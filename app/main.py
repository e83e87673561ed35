"""The application factory: ``create_app(settings)`` wires everything, top to bottom."""

from __future__ import annotations

from typing import Any

from advanced_alchemy.extensions.litestar import SQLAlchemyAsyncConfig, SQLAlchemyPlugin
from litestar import Litestar
from litestar.config.cors import CORSConfig
from litestar.datastructures import State
from litestar.enums import ScopeType
from litestar.middleware import DefineMiddleware
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import SwaggerRenderPlugin
from litestar.openapi.spec import Components, SecurityScheme
from litestar.stores.base import Store
from litestar.stores.memory import MemoryStore
from litestar.stores.redis import RedisStore
from litestar.types import LifeSpanReceive, LifeSpanScope, LifeSpanSend, Receive, Scope, Send
from opentelemetry.sdk.trace import TracerProvider
from redis.asyncio import Redis

from app import __version__
from app.auth.controllers import AuthController, jwks
from app.auth.middleware import BearerAuthMiddleware
from app.auth.password_policy import BreachedPasswordChecker
from app.auth.passwords import PasswordHasher
from app.auth.throttle import DatabaseThrottleStore, LoginThrottle, RedisThrottleStore
from app.auth.tokens import TokenIssuer
from app.cli import UserAdminCLIPlugin
from app.db.config import database_config
from app.edge.client_address import ASGICall, behind_trusted_proxies
from app.edge.headers import security_headers
from app.edge.limits import BoundedJsonRequest, limit_header_bytes
from app.edge.rate_limits import STORE_NAME as RATE_LIMIT_STORE
from app.edge.rate_limits import rate_limit_middleware
from app.errors import EXCEPTION_HANDLERS, PROBLEM_TYPE_BASE
from app.lifespan import lifespan
from app.observability.http import HttpTelemetry
from app.observability.request_id import add_request_id_header
from app.observability.setup import build_observability
from app.settings import HttpSettings, Settings
from app.system.health import HealthController, Lifecycle
from app.system.metrics import metrics_endpoint
from app.users.controllers import MeController, UsersController


class UserServiceApp(Litestar):
    """Litestar behind its HTTP entry: the trusted-proxy rewrite of the client address, then
    request telemetry, around all of it, routing and error handling included (app-level
    middleware only sees requests that matched a route)."""

    http_entry: ASGICall | None = None

    async def __call__(
        self, scope: Scope | LifeSpanScope, receive: Receive | LifeSpanReceive, send: Send | LifeSpanSend
    ) -> None:
        if self.http_entry is None or scope["type"] != ScopeType.HTTP:
            await super().__call__(scope, receive, send)
        else:
            await self.http_entry(scope, receive, send)

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Litestar itself, without the entry (what the entry calls)."""
        await super().__call__(scope, receive, send)


def _http_entry(app: UserServiceApp, telemetry: HttpTelemetry | None, http: HttpSettings) -> ASGICall:
    """Outside in: the client address from trusted proxies, telemetry (so that refusals are
    counted and logged), the header-size limit, then Litestar."""
    bounded = limit_header_bytes(app.handle, http.max_header_bytes, PROBLEM_TYPE_BASE + "headers-too-large")

    async def with_telemetry(scope: Scope, receive: Receive, send: Send) -> None:
        if telemetry is None:
            await bounded(scope, receive, send)
        else:
            await telemetry(scope, receive, send, bounded)

    return behind_trusted_proxies(with_telemetry, http.trusted_proxies)


def _abuse_state(settings: Settings, db_config: SQLAlchemyAsyncConfig) -> tuple[Store, LoginThrottle, Redis | None]:
    """Where rate-limit counters and the login throttle live: Redis when configured (shared
    by every replica), else this process's memory and the database."""
    if settings.redis_url is not None:
        redis = Redis.from_url(settings.redis_url.get_secret_value())
        store: Store = RedisStore(redis, namespace="user-service:rate-limit")
        return store, LoginThrottle(RedisThrottleStore(redis, settings.login_throttle), settings.login_throttle), redis
    throttle_store = DatabaseThrottleStore(db_config.get_engine(), settings.login_throttle)
    return MemoryStore(), LoginThrottle(throttle_store, settings.login_throttle), None


def _cors(settings: Settings) -> CORSConfig | None:
    if not settings.http.cors_allow_origins:
        return None
    return CORSConfig(
        allow_origins=settings.http.cors_allow_origins,
        allow_credentials=settings.http.cors_allow_credentials,
        allow_methods=["GET", "POST", "PATCH", "PUT", "DELETE"],
        allow_headers=["Authorization", "Content-Type", "X-Request-ID"],
        expose_headers=["X-Request-ID", "Retry-After", "RateLimit-Limit", "RateLimit-Remaining", "RateLimit-Reset"],
        max_age=600,
    )


def create_app(settings: Settings | None = None, *, tracer_provider: TracerProvider | None = None) -> Litestar:
    """Build the service. ``tracer_provider`` replaces the OTEL_*-configured one (tests)."""
    settings = settings or Settings()
    observability = build_observability(settings, version=__version__, tracer_provider=tracer_provider)
    db_config = database_config(settings.db, settings.service_name)
    observability.watch_engine(db_config.get_engine())
    tokens = TokenIssuer(settings.tokens)
    hasher = PasswordHasher(settings.passwords)
    observability.watch_hasher(hasher)

    rate_limit_store, login_throttle, redis = _abuse_state(settings, db_config)

    route_handlers: list[Any] = [AuthController, jwks, MeController, UsersController, HealthController]
    if observability.metrics is not None:
        route_handlers.append(metrics_endpoint)

    app = UserServiceApp(
        route_handlers=route_handlers,
        plugins=[SQLAlchemyPlugin(config=db_config), UserAdminCLIPlugin(), *observability.plugins()],
        middleware=[
            *rate_limit_middleware(settings.rate_limits, path_prefix=AuthController.path),
            DefineMiddleware(BearerAuthMiddleware, tokens=tokens, db_config=db_config, exclude=["^/schema"]),
        ],
        stores={RATE_LIMIT_STORE: rate_limit_store},
        cors_config=_cors(settings),
        exception_handlers=dict(EXCEPTION_HANDLERS),
        before_send=[add_request_id_header, security_headers(hsts_seconds=settings.http.hsts_seconds)],
        lifespan=[lifespan],
        state=State(
            {
                "settings": settings,
                "db_config": db_config,
                "token_issuer": tokens,
                "password_hasher": hasher,
                "breach_checker": BreachedPasswordChecker(settings.passwords),
                "lifecycle": Lifecycle(),
                "observability": observability,
                "metrics": observability.metrics,
                "events": observability.events,
                "login_throttle": login_throttle,
                "rate_limit_store": rate_limit_store,
                "redis": redis,
            }
        ),
        openapi_config=OpenAPIConfig(
            title="User service",
            version=__version__,
            path="/schema",
            render_plugins=[SwaggerRenderPlugin()],
            components=Components(
                security_schemes={"BearerToken": SecurityScheme(type="http", scheme="bearer", bearer_format="JWT")}
            ),
        ),
        request_max_body_size=settings.http.max_body_bytes,
        request_class=BoundedJsonRequest,
        # Logging is ours (app/observability/logging.py): one pipeline for every logger.
        logging_config=None,
        debug=settings.http.debug,
    )
    app.http_entry = _http_entry(app, observability.http, settings.http)
    return app
