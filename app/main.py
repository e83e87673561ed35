"""The application factory: ``create_app(settings)`` wires everything, top to bottom."""

from __future__ import annotations

from typing import Any

from advanced_alchemy.extensions.litestar import SQLAlchemyPlugin
from litestar import Litestar
from litestar.datastructures import State
from litestar.enums import ScopeType
from litestar.middleware import DefineMiddleware
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import SwaggerRenderPlugin
from litestar.openapi.spec import Components, SecurityScheme
from litestar.types import LifeSpanReceive, LifeSpanScope, LifeSpanSend, Receive, Scope, Send
from opentelemetry.sdk.trace import TracerProvider

from app import __version__
from app.auth.controllers import AuthController, jwks
from app.auth.middleware import BearerAuthMiddleware
from app.auth.password_policy import BreachedPasswordChecker
from app.auth.passwords import PasswordHasher
from app.auth.tokens import TokenIssuer
from app.cli import UserAdminCLIPlugin
from app.db.config import database_config
from app.errors import EXCEPTION_HANDLERS
from app.lifespan import lifespan
from app.observability.http import HttpTelemetry
from app.observability.request_id import add_request_id_header
from app.observability.setup import build_observability
from app.settings import Settings
from app.system.health import HealthController, Lifecycle
from app.system.metrics import metrics_endpoint
from app.users.controllers import MeController, UsersController


class UserServiceApp(Litestar):
    """Litestar with request telemetry around all of it, routing and error handling included
    (app-level middleware only sees requests that matched a route)."""

    http_telemetry: HttpTelemetry | None = None

    async def __call__(
        self, scope: Scope | LifeSpanScope, receive: Receive | LifeSpanReceive, send: Send | LifeSpanSend
    ) -> None:
        if self.http_telemetry is None or scope["type"] != ScopeType.HTTP:
            await super().__call__(scope, receive, send)
        else:
            await self.http_telemetry(scope, receive, send, super().__call__)  # type: ignore[arg-type]


def create_app(settings: Settings | None = None, *, tracer_provider: TracerProvider | None = None) -> Litestar:
    """Build the service. ``tracer_provider`` replaces the OTEL_*-configured one (tests)."""
    settings = settings or Settings()
    observability = build_observability(settings, version=__version__, tracer_provider=tracer_provider)
    db_config = database_config(settings.db, settings.service_name)
    observability.watch_engine(db_config.get_engine())
    tokens = TokenIssuer(settings.tokens)
    hasher = PasswordHasher(settings.passwords)
    observability.watch_hasher(hasher)

    route_handlers: list[Any] = [AuthController, jwks, MeController, UsersController, HealthController]
    if observability.metrics is not None:
        route_handlers.append(metrics_endpoint)

    app = UserServiceApp(
        route_handlers=route_handlers,
        plugins=[SQLAlchemyPlugin(config=db_config), UserAdminCLIPlugin(), *observability.plugins()],
        middleware=[DefineMiddleware(BearerAuthMiddleware, tokens=tokens, db_config=db_config, exclude=["^/schema"])],
        exception_handlers=dict(EXCEPTION_HANDLERS),
        before_send=[add_request_id_header],
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
            security=[{"BearerToken": []}],
        ),
        request_max_body_size=settings.http.max_body_bytes,
        # Logging is ours (app/observability/logging.py): one pipeline for every logger.
        logging_config=None,
        debug=settings.http.debug,
    )
    app.http_telemetry = observability.http
    return app
