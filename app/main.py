"""The application factory: ``create_app(settings)`` wires everything, top to bottom."""

from __future__ import annotations

from advanced_alchemy.extensions.litestar import SQLAlchemyPlugin
from litestar import Litestar
from litestar.datastructures import State
from litestar.middleware import DefineMiddleware
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import SwaggerRenderPlugin
from litestar.openapi.spec import Components, SecurityScheme

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
from app.observability.request_id import RequestIdMiddleware, add_request_id_header
from app.settings import Settings
from app.system.health import HealthController, Lifecycle
from app.users.controllers import MeController, UsersController


def create_app(settings: Settings | None = None) -> Litestar:
    settings = settings or Settings()
    db_config = database_config(settings.db, settings.service_name)
    tokens = TokenIssuer(settings.tokens)

    return Litestar(
        route_handlers=[AuthController, jwks, MeController, UsersController, HealthController],
        plugins=[SQLAlchemyPlugin(config=db_config), UserAdminCLIPlugin()],
        middleware=[
            RequestIdMiddleware(),
            DefineMiddleware(BearerAuthMiddleware, tokens=tokens, db_config=db_config, exclude=["^/schema"]),
        ],
        exception_handlers=dict(EXCEPTION_HANDLERS),
        before_send=[add_request_id_header],
        lifespan=[lifespan],
        state=State(
            {
                "settings": settings,
                "db_config": db_config,
                "token_issuer": tokens,
                "password_hasher": PasswordHasher(settings.passwords),
                "breach_checker": BreachedPasswordChecker(settings.passwords),
                "lifecycle": Lifecycle(),
            }
        ),
        openapi_config=OpenAPIConfig(
            title="User service",
            version=__version__,
            path="/schema",
            render_plugins=[SwaggerRenderPlugin()],
            components=Components(
                security_schemes={
                    "BearerToken": SecurityScheme(type="http", scheme="bearer", bearer_format="JWT"),
                }
            ),
            security=[{"BearerToken": []}],
        ),
        request_max_body_size=settings.http.max_body_bytes,
        debug=settings.http.debug,
    )
