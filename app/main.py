"""The application factory: ``create_app(settings)`` wires everything, top to bottom."""

from __future__ import annotations

from typing import Any

from advanced_alchemy.extensions.litestar import SQLAlchemyPlugin
from litestar import Litestar
from litestar.config.cors import CORSConfig
from litestar.di import Provide
from litestar.enums import ScopeType
from litestar.middleware import DefineMiddleware
from litestar.openapi import OpenAPIConfig
from litestar.openapi.spec import Components, SecurityScheme
from litestar.routes import HTTPRoute
from litestar.types import LifeSpanReceive, LifeSpanScope, LifeSpanSend, Receive, Scope, Send
from opentelemetry.sdk.trace import TracerProvider

from app import __version__
from app.accounts.activity_controllers import MyEventsController, MySessionsController
from app.accounts.authentication import BearerAuthMiddleware
from app.accounts.callers import LiveCallers
from app.accounts.controllers import AuthController, MeController, jwks
from app.accounts.mfa_controllers import MfaLoginController, MyTotpController
from app.accounts.page_errors import pages_under
from app.accounts.pages import CSRF_SECRET_PURPOSE, PAGES_PATH, account_pages, page_templates
from app.accounts.recovery_controllers import (
    AccountLinksController,
    EmailChangeController,
    VerificationRequestController,
)
from app.admin.controllers import UsersController
from app.cli import MailCLIPlugin, SchemaCLIPlugin, UserAdminCLIPlugin
from app.container import Container, build_container
from app.lifespan import lifespan_of
from app.observability.metrics import multiprocess_dir
from app.settings import Settings
from app.system.health import HealthController
from app.system.metrics import metrics_endpoint
from app.web.bodies import StrictJsonRequest
from app.web.chain import Layer, outer_chain
from app.web.docs import SelfHostedSwaggerUI
from app.web.problems import exception_handlers
from app.web.rate_limits import STORE_NAME as RATE_LIMIT_STORE
from app.web.rate_limits import account_rate_limit_middleware, rate_limit_middleware
from app.web.shedding import shedding_while_hashing_is_full


class UserServiceApp(Litestar):
    """Litestar behind the outer HTTP chain (app/web/chain.py), holding the container it
    was built from (the CLI's commands are handed the app and take it from there)."""

    def __init__(self, *, container: Container, outer: Layer, **config: Any) -> None:
        super().__init__(**config)
        self.container = container
        self._http_entry = outer(self._litestar)

    async def __call__(
        self, scope: Scope | LifeSpanScope, receive: Receive | LifeSpanReceive, send: Send | LifeSpanSend
    ) -> None:
        if scope["type"] == ScopeType.HTTP:
            await self._http_entry(scope, receive, send)  # type: ignore[arg-type]
        else:
            await super().__call__(scope, receive, send)

    async def _litestar(self, scope: Scope, receive: Receive, send: Send) -> None:
        await super().__call__(scope, receive, send)


def _cors(settings: Settings) -> CORSConfig | None:
    if not settings.http.cors_allow_origins:
        return None
    return CORSConfig(
        allow_origins=settings.http.cors_allow_origins,
        allow_credentials=settings.http.cors_allow_credentials,
        allow_methods=["GET", "HEAD", "POST", "PATCH", "PUT", "DELETE"],
        allow_headers=["Authorization", "Content-Type", "X-Request-ID"],
        expose_headers=["X-Request-ID", "Retry-After", "RateLimit-Limit", "RateLimit-Remaining", "RateLimit-Reset"],
        max_age=600,
    )


DOCS_PATH = "/schema"


def _provide(value: object) -> Provide:
    return Provide(lambda: value, use_cache=True, sync_to_thread=False)


def _edge_shedding(container: Container) -> Layer:
    """The storm routes shed before Litestar while the hashing pool is full (app/web/shedding.py)."""
    login, register = f"{AuthController.path}/login", f"{AuthController.path}/register"

    def counted(path: str) -> None:
        if path == login:
            container.events.login_shed_at_edge()

    return lambda app: shedding_while_hashing_is_full(
        app,
        hasher=container.hasher,
        routes={login: "verify", register: "hash"},
        delay_seconds=container.settings.passwords.shed_delay_seconds,
        on_shed=counted,
    )


def create_app(settings: Settings | None = None, *, tracer_provider: TracerProvider | None = None) -> UserServiceApp:
    """Build the service. ``tracer_provider`` replaces the OTEL_*-configured one (tests)."""
    settings = settings or Settings()
    container = build_container(settings, tracer_provider=tracer_provider)
    observability = container.observability

    route_handlers: list[Any] = [
        AuthController,
        AccountLinksController,
        VerificationRequestController,
        jwks,
        MeController,
        EmailChangeController,
        MySessionsController,
        MyEventsController,
        MfaLoginController,
        MyTotpController,
        UsersController,
        HealthController,
        # The HTML pages the links in mails open, outside /api/v1 (app/accounts/pages.py).
        account_pages(settings, csrf_secret=container.tokens.derived_secret(CSRF_SECRET_PURPOSE)),
    ]
    dependencies = {"container": _provide(container), "lifecycle": _provide(container.lifecycle)}
    if observability.metrics is not None and settings.metrics_listener is None:
        # With a metrics port of its own (the lifespan starts that listener), the service
        # port has no /metrics route at all: it answers 404 like any unknown path.
        route_handlers.append(metrics_endpoint)
        dependencies["metrics"] = _provide(observability.metrics)

    app = UserServiceApp(
        container=container,
        outer=outer_chain(
            settings.http,
            observability.http,
            pages_path=PAGES_PATH,
            edge_shedding=_edge_shedding(container),
            proxy_port=settings.server.proxy_port,
        ),
        route_handlers=route_handlers,
        plugins=[
            SQLAlchemyPlugin(config=container.database),
            UserAdminCLIPlugin(),
            MailCLIPlugin(),
            SchemaCLIPlugin(),
            *observability.plugins(),
        ],
        # Inside Litestar, in this order, after the outer chain: CORS (from cors_config),
        # per-address rate limits, bearer authentication, per-account rate limits.
        cors_config=_cors(settings),
        middleware=[
            # The auth endpoints, and the one under /me that sends mail (/me itself pays nothing).
            *rate_limit_middleware(
                settings.rate_limits, path_prefixes=(AuthController.path, f"{MeController.path}/email", PAGES_PATH)
            ),
            DefineMiddleware(
                BearerAuthMiddleware,
                tokens=container.tokens,
                callers=LiveCallers(
                    container.database.get_engine(),
                    ttl_seconds=settings.tokens.caller_cache_seconds,
                    max_entries=settings.tokens.verified_cache_size,
                    # Several workers: one generation for all of them (app/__main__.py empties the folder).
                    shared_dir=multiprocess_dir(),
                ),
                exclude=["^/schema"],
            ),
            *account_rate_limit_middleware(settings.rate_limits, path_prefix=MeController.path),
        ],
        stores={RATE_LIMIT_STORE: container.rate_limit_store},
        # Problem details for the API; pages in words under /account (app/accounts/page_errors.py).
        exception_handlers=pages_under(PAGES_PATH, exception_handlers(on_rate_limited=container.events.rate_limited)),
        dependencies=dependencies,
        lifespan=[lifespan_of(container)],
        openapi_config=OpenAPIConfig(
            title="User service",
            version=__version__,
            path=DOCS_PATH,
            render_plugins=[SelfHostedSwaggerUI(openapi_path=DOCS_PATH)],
            components=Components(
                security_schemes={"BearerToken": SecurityScheme(type="http", scheme="bearer", bearer_format="JWT")}
            ),
        ),
        template_config=page_templates(),
        request_max_body_size=settings.http.max_body_bytes,
        request_class=StrictJsonRequest,
        # Logging is ours (app/observability/logging.py): one pipeline for every logger.
        logging_config=None,
        debug=settings.http.debug,
    )
    if observability.metrics is not None:
        observability.metrics.start_error_series(_api_operations(app))
    return app


# The routes the availability SLI counts (deploy/slo/slos.yml: http_route=~"/api/.+").
API_PREFIX = "/api/"


def _api_operations(app: Litestar) -> list[tuple[str, str]]:
    """(method, route template) of each API operation: what the SLIs measure."""
    return [
        (method, route.path_format)
        for route in app.routes
        if isinstance(route, HTTPRoute) and route.path_format.startswith(API_PREFIX)
        for method in sorted(route.methods - {"OPTIONS", "HEAD"})
    ]
