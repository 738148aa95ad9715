"""Prometheus's scrape target: the fleet's and this portal's metrics (docs/operations.md)."""

from __future__ import annotations

import hmac
from typing import cast

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from edc.observability.prometheus import PortalMetrics
from edc.portal.deps import SettingsDep
from edc.schemas import ErrorOut

router = APIRouter(tags=["operations"])


def _authorized(request: Request, token: str) -> bool:
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(given.strip(), token)


@router.get(
    "/metrics",
    response_class=Response,
    responses={
        200: {"content": {"text/plain": {}}, "description": "Prometheus text format."},
        401: {"model": ErrorOut, "description": "EDC_METRICS_TOKEN is set; this is not it."},
    },
)
def metrics(request: Request, settings: SettingsDep) -> Response:
    """Prometheus metrics; with EDC_METRICS_TOKEN set, only for `Authorization: Bearer <token>`."""
    if settings.metrics_token and not _authorized(request, settings.metrics_token):
        # Answered here rather than by NotAuthenticated's handler, which sends browsers to the
        # log-in page: no account opens this route, only the token.
        body = ErrorOut(
            detail="The metrics need `Authorization: Bearer <EDC_METRICS_TOKEN>`.",
            code="not_authenticated",
        )
        return JSONResponse(body.model_dump(), 401, headers={"WWW-Authenticate": "Bearer"})
    portal_metrics = cast(PortalMetrics, request.app.state.metrics)
    content, content_type = portal_metrics.exposition(request.headers.get("accept", ""))
    return Response(content, media_type=content_type)
