"""The console at ``/`` and the API reference at ``/docs``, both served from files
installed with postcall (the console's own, and the ``swagger-ui-bundle-v2`` package's
Swagger UI): nothing is fetched from elsewhere, so both work air-gapped."""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse
from fastapi.staticfiles import StaticFiles
from swagger_ui_bundle import swagger_ui_path

CONSOLE_DIR = Path(str(files("postcall") / "console"))
"""The console's HTML, CSS and JavaScript (package data, no build step)."""

_NO_CACHE = {"Cache-Control": "no-cache"}


def mount(app: FastAPI) -> None:
    """Serve the console at ``/`` (assets under ``/console/``) and Swagger UI at ``/docs``."""
    app.mount("/console", StaticFiles(directory=CONSOLE_DIR), name="console")
    app.mount("/docs/assets", StaticFiles(directory=str(swagger_ui_path)), name="docs-assets")

    @app.get("/", include_in_schema=False)
    def console() -> FileResponse:
        return FileResponse(CONSOLE_DIR / "index.html", headers=_NO_CACHE)

    @app.get("/docs", include_in_schema=False)
    def docs() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=app.openapi_url or "/openapi.json",
            title=f"{app.title} API",
            swagger_js_url="/docs/assets/swagger-ui-bundle.js",
            swagger_css_url="/docs/assets/swagger-ui.css",
            swagger_favicon_url="/console/favicon.svg",
            swagger_ui_parameters={"persistAuthorization": False},
        )
