"""/docs and /redoc from assets shipped in a wheel (fastapi-offline enters here only).

FastAPI's default pages load Swagger UI and ReDoc from a public CDN: an
operator who pastes a netops token into /docs would run foreign code on the
controller's origin, and on an isolated management network the page stays
blank.  The same assets come from the ``fastapi-offline`` package instead,
served under /docs/assets; no page references another origin.
"""

from __future__ import annotations

import importlib.resources

from fastapi import FastAPI, Request
from fastapi.openapi.docs import (
    get_redoc_html,
    get_swagger_ui_html,
    get_swagger_ui_oauth2_redirect_html,
)
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

ASSETS = "/docs/assets"


def _asset_directory() -> str:
    # The wheel's data directory (favicon.png, swagger-ui-bundle.js,
    # swagger-ui.css, redoc.standalone.js); a plain directory when installed.
    return str(importlib.resources.files("fastapi_offline") / "static")


def install(app: FastAPI) -> None:
    """Serve /docs (Swagger UI), /redoc and their assets on ``app``'s own origin."""
    openapi_url = app.openapi_url or "/openapi.json"
    title = app.title
    app.mount(ASSETS, StaticFiles(directory=_asset_directory()), name="docs-assets")
    redirect = app.swagger_ui_oauth2_redirect_url or "/docs/oauth2-redirect"

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")  # behind a proxy's path prefix
        return get_swagger_ui_html(
            openapi_url=f"{root}{openapi_url}",
            title=f"{title} - Swagger UI",
            swagger_js_url=f"{root}{ASSETS}/swagger-ui-bundle.js",
            swagger_css_url=f"{root}{ASSETS}/swagger-ui.css",
            swagger_favicon_url=f"{root}{ASSETS}/favicon.png",
            oauth2_redirect_url=f"{root}{redirect}",
            # validatorUrl: Swagger UI would otherwise send the schema's URL to
            # validator.swagger.io for a badge.
            swagger_ui_parameters={"validatorUrl": None},
        )

    @app.get(redirect, include_in_schema=False)
    async def swagger_ui_redirect() -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()

    @app.get("/redoc", include_in_schema=False)
    async def redoc(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return get_redoc_html(
            openapi_url=f"{root}{openapi_url}",
            title=f"{title} - ReDoc",
            redoc_js_url=f"{root}{ASSETS}/redoc.standalone.js",
            redoc_favicon_url=f"{root}{ASSETS}/favicon.png",
            with_google_fonts=False,
        )
