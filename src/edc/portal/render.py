"""Rendering a page: the template plus what every page needs (the caller, a CSRF token)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fastapi import Request
from fastapi.templating import Jinja2Templates
from starlette.datastructures import FormData
from starlette.responses import Response

from edc.config import Settings
from edc.errors import InvalidInput
from edc.models import utcnow
from edc.portal import presentation
from edc.portal.auth import CSRF_FIELD, Identity, check_csrf, csrf_token_for, set_csrf_cookie
from edc.services import rules

# What the templates call besides the filters app.py registers: the formatting of
# edc.portal.presentation, so every page words a figure, a unit or a time the same way.
HELPERS: dict[str, Any] = {
    "metric_label": presentation.metric_label,
    "reported_columns": presentation.reported_columns,
    "score_explanation": presentation.score_explanation,
    "when_exact": presentation.when_exact,
    "duration_between": presentation.duration_between,
    "admin_actions": presentation.admin_actions,
}


def render(
    request: Request,
    template: str,
    context: Mapping[str, Any],
    *,
    identity: Identity | None,
    status_code: int = 200,
    headers: Mapping[str, str] | None = None,
) -> Response:
    settings: Settings = request.app.state.settings
    templates: Jinja2Templates = request.app.state.templates
    full = {
        **HELPERS,
        "viewer": identity,
        "csrf_field": CSRF_FIELD,
        "csrf_token": csrf_token_for(request, settings, identity.session_id if identity else None),
        "window_message": rules.Window.from_settings(settings).describe(utcnow()),
        **context,
    }
    response = templates.TemplateResponse(
        request, template, full, status_code=status_code, headers=dict(headers or {})
    )
    set_csrf_cookie(request, response, settings)
    return response


def render_error(
    request: Request,
    message: str,
    status_code: int,
    *,
    identity: Identity | None,
    headers: Mapping[str, str] | None = None,
) -> Response:
    """The error page, with the caller's own navigation bar like every other page."""
    context = {"message": message, "status": status_code}
    return render(
        request, "error.html", context, identity=identity, status_code=status_code, headers=headers
    )


async def checked_form(request: Request, identity: Identity | None) -> FormData:
    """The posted form, once its CSRF token is found to match this browser and session.

    A caller with an API token needs none: browsers never send that header on their own.
    """
    form = await request.form()
    if identity is not None and identity.via == "token":
        return form
    token = form.get(CSRF_FIELD)
    check_csrf(
        request,
        identity.session_id if identity else None,
        token if isinstance(token, str) else None,
    )
    return form


def form_text(form: FormData, name: str) -> str:
    """A text field of the form ("" when absent); InvalidInput when it holds a NUL character,
    which PostgreSQL's text cannot store."""
    value = form.get(name)
    if not isinstance(value, str):
        return ""
    if "\x00" in value:
        raise InvalidInput(f"The form field {name!r} contains a NUL character.")
    return value
