"""The API docs page (/schema/swagger): Swagger UI served by the service itself.

Litestar's SwaggerRenderPlugin loads Swagger UI's script and styles from a CDN without
integrity hashes (whoever controls the CDN runs script on the page where a user pastes a
token) and starts it with an inline script, so the page could only have a CSP that allows
both. Here the page is static HTML naming only files this service serves under
``/schema/assets/``: Swagger UI's own dist files from the swagger-ui-bundle-v2 package (the
same version on every replica, locked in uv.lock) and two small files of ours that start it
and style the body. Nothing is inline, so the docs CSP (app/web/headers.py) allows scripts
and styles from 'self' and nothing else, with no hash to keep in step with the page.
"""

from __future__ import annotations

import html
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any

from litestar import Request, Response, Router, get
from litestar.exceptions import NotFoundException
from litestar.openapi.plugins import SwaggerRenderPlugin
from litestar.params import FromPath
from swagger_ui_bundle import swagger_ui_path

ASSETS_PATH = "/assets"  # below the OpenAPI router's path (/schema)
_OWN_ASSETS = resources.files("app.web") / "docs_assets"
# Litestar adds "; charset=utf-8" to text types itself.
_MEDIA_TYPES = {".js": "text/javascript", ".css": "text/css", ".png": "image/png"}
# Exactly what the page loads: the rest of the dist (its demo index.html, which points at a
# petstore on another host, the source maps) is not served.
_ASSET_FILES: dict[str, Traversable] = {
    "swagger-ui-bundle.js": swagger_ui_path / "swagger-ui-bundle.js",
    "swagger-ui.css": swagger_ui_path / "swagger-ui.css",
    "favicon-32x32.png": swagger_ui_path / "favicon-32x32.png",
    "docs.js": _OWN_ASSETS / "docs.js",
    "docs.css": _OWN_ASSETS / "docs.css",
}
# Not content-addressed, so not immutable; five minutes of a stale copy after an upgrade is harmless.
_ASSET_CACHE_CONTROL = "public, max-age=300"


class SelfHostedSwaggerUI(SwaggerRenderPlugin):
    """Swagger UI from this service's own files, started by a served script (no inline code)."""

    def __init__(self, *, openapi_path: str, **kwargs: Any) -> None:
        base = f"{openapi_path}{ASSETS_PATH}"
        super().__init__(
            js_url=f"{base}/swagger-ui-bundle.js",
            css_url=f"{base}/swagger-ui.css",
            favicon=f'<link rel="icon" type="image/png" href="{base}/favicon-32x32.png">',
            style="",
            **kwargs,
        )
        self.assets_base = base
        self._loaded: dict[str, bytes] = {}

    def render(self, request: Request[Any, Any, Any], openapi_schema: dict[str, Any]) -> bytes:
        title = html.escape(str(openapi_schema["info"]["title"]))
        openapi_url = html.escape(self.get_openapi_json_route(request), quote=True)
        return f"""<!DOCTYPE html>
<html lang="en">
  <head>
    <meta charset="utf-8">
    <meta name="viewport" content="width=device-width, initial-scale=1">
    <title>{title}</title>
    {self.favicon}
    <link rel="stylesheet" href="{self.css_url}">
    <link rel="stylesheet" href="{self.assets_base}/docs.css">
    <script src="{self.js_url}" defer></script>
    <script src="{self.assets_base}/docs.js" defer></script>
  </head>
  <body>
    <div id="swagger-ui" data-openapi-url="{openapi_url}"></div>
  </body>
</html>
""".encode()

    def receive_router(self, router: Router) -> None:
        # Instead of the parent's oauth2-redirect.html (an inline script, for OAuth2 flows this
        # service does not offer), the assets the page loads.
        router.register(
            get(f"{ASSETS_PATH}/{{name:str}}", include_in_schema=False, sync_to_thread=False)(self.serve_asset)
        )

    def serve_asset(self, name: FromPath[str]) -> Response[bytes]:
        source = _ASSET_FILES.get(name)
        if source is None:
            raise NotFoundException()
        if name not in self._loaded:
            self._loaded[name] = source.read_bytes()
        return Response(
            self._loaded[name],
            media_type=_MEDIA_TYPES[Path(name).suffix],
            headers={"Cache-Control": _ASSET_CACHE_CONTROL},
        )
