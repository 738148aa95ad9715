"""The portal's FastAPI application, built by a factory that takes its settings."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import anyio.to_thread
from fastapi import Depends, FastAPI
from fastapi.exceptions import RequestValidationError
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from sqlalchemy.exc import SQLAlchemyError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp

from edc import db
from edc.config import Settings, get_settings
from edc.errors import EdcError
from edc.observability.http import RequestObserver, request_log_context
from edc.observability.prometheus import PortalMetrics
from edc.portal import openapi, presentation
from edc.portal.body_limits import BodyLimits
from edc.portal.errors import edc_error_handler, http_error_handler, validation_error_handler
from edc.portal.events import StreamHub
from edc.portal.login_gate import LoginGate
from edc.portal.routes import (
    account,
    admin_api,
    admin_pages,
    api,
    docs,
    health,
    internal,
    pages,
    scrape,
    teams,
)
from edc.portal.security_headers import SecurityHeaders
from edc.portal.upload_slots import UploadSlots
from edc.services import rescore, submissions

log = logging.getLogger(__name__)

PORTAL_DIR = Path(__file__).parent
STATIC_DIR = PORTAL_DIR / "static"
TEMPLATES_DIR = PORTAL_DIR / "templates"


class PortalApp(FastAPI):
    """FastAPI with the security headers outside everything, Starlette's own last-resort answer
    to an unhandled exception (its ServerErrorMiddleware, the outermost layer FastAPI builds)
    included: every answer carries them, a 500 too."""

    def build_middleware_stack(self) -> ASGIApp:
        settings: Settings = self.state.settings
        return SecurityHeaders(super().build_middleware_stack(), hsts=settings.secure_cookies)


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()

    async def sweep_upload_debris() -> None:
        # At start and then periodically: a portal killed mid-upload leaves partial files, and
        # several portals may share the uploads folder.
        while True:
            try:
                await anyio.to_thread.run_sync(submissions.remove_upload_debris, settings)
            except EdcError as exc:  # a database down must not take the portal down
                log.warning("upload debris not cleaned: %s", exc.message)
            await anyio.sleep(max(0.5, settings.stale_upload_s / 2))

    def rescore_results() -> None:
        # Before the first request: a result ranked under an older rule of the task must not
        # outrank the current ones even for a moment. One empty query when all are current.
        try:
            with db.database_errors():
                rescore.rescore_configured(settings)
        except EdcError as exc:  # a database down must not take the portal down
            log.warning("results not re-scored for the current ranking rule: %s", exc.message)
        except SQLAlchemyError as exc:  # nor a database not yet migrated (`edc db upgrade`)
            log.warning("results not re-scored for the current ranking rule: %s", exc)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        settings.uploads_dir.mkdir(parents=True, exist_ok=True)
        await anyio.to_thread.run_sync(rescore_results)
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(sweep_upload_debris)
            yield
            tasks.cancel_scope.cancel()

    app = PortalApp(
        title="Efficient-Decode Competition",
        description="Upload a decoder; it is run sandboxed, checked token by token and ranked.",
        lifespan=lifespan,
        dependencies=[Depends(request_log_context)],
        docs_url=None,  # served from vendored assets by routes.docs
        redoc_url=None,
    )
    app.state.settings = settings
    app.state.templates = make_templates()
    app.state.streams = StreamHub(settings)
    app.state.login_gate = LoginGate(settings.login_concurrency)
    app.state.upload_slots = UploadSlots(settings)
    app.state.metrics = PortalMetrics(settings)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    app.add_exception_handler(EdcError, edc_error_handler)
    app.add_exception_handler(RequestValidationError, validation_error_handler)
    app.add_exception_handler(StarletteHTTPException, http_error_handler)
    app.include_router(pages.router)
    app.include_router(account.router)
    app.include_router(admin_pages.router)
    app.include_router(api.router, prefix="/api/v1")
    app.include_router(teams.router, prefix="/api/v1")
    app.include_router(admin_api.router, prefix="/api/v1")
    app.include_router(health.router)
    app.include_router(docs.router)
    app.include_router(scrape.router)
    app.include_router(internal.router, prefix="/internal/v1")
    openapi.install(app)
    # Outermost first: the security headers (PortalApp), Starlette's 500, the request observer
    # (it counts refused bodies too), the body limits, then the routes. The upload routes stream
    # their bodies under their own limits (edc.portal.upload); every other body is capped.
    app.add_middleware(
        BodyLimits, settings=settings, streamed=(pages.submit, api.create_submission)
    )
    app.add_middleware(RequestObserver, metrics=app.state.metrics)
    return app


def make_templates() -> Jinja2Templates:
    templates = Jinja2Templates(directory=TEMPLATES_DIR)
    templates.env.globals["status_badge"] = presentation.STATUS_BADGE
    templates.env.globals["key_figures"] = presentation.key_figures
    templates.env.filters["when"] = presentation.when
    templates.env.filters["number"] = presentation.number
    return templates
