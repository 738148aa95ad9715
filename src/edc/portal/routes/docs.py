"""``/docs``: the API explorer, served from the vendored swagger-ui so it works offline and trusts
no third party (FastAPI's default page loads it from a public CDN, without integrity hashes)."""

from __future__ import annotations

from html import escape

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

router = APIRouter(include_in_schema=False)


@router.get("/docs", name="swagger_ui_html")  # the name FastAPI gives its own page
def api_docs(request: Request) -> HTMLResponse:
    def static(path: str) -> str:
        return escape(str(request.url_for("static", path=path).path))

    title = escape(request.app.title)
    openapi_url = escape(str(request.app.openapi_url))
    return HTMLResponse(
        "<!doctype html>\n"
        f'<html lang="en"><head><meta charset="utf-8"><title>{title}: API</title>'
        f'<link rel="stylesheet" href="{static("vendor/swagger-ui/swagger-ui.css")}"></head>'
        f'<body><div id="swagger-ui" data-openapi-url="{openapi_url}"></div>'
        f'<script src="{static("vendor/swagger-ui/swagger-ui-bundle.js")}"></script>'
        f'<script src="{static("js/docs.js")}"></script></body></html>'
    )
