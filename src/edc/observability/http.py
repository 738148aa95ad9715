"""The portal's request observer: times and counts every HTTP request, and gives its log lines
their context.

* :class:`RequestObserver`, an ASGI middleware (not Starlette's BaseHTTPMiddleware, which wraps
  every streamed upload and event stream in extra tasks): times the request to the end of its
  body, counts it by route template (``/api/v1/submissions/{submission_id}``, never the raw path:
  one series per route, not one per id), writes one access line, and sets ``request_id`` in the
  log context.
* :func:`request_log_context`, an application-wide dependency: on a route about one submission,
  every line logged while the route runs carries ``submission_id``. (A dependency, because only
  the router knows the path parameters, and it finds them after the middleware has run.)
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import AsyncIterator, Mapping
from typing import Any

from fastapi import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from edc.observability.logging import log_context
from edc.observability.prometheus import PortalMetrics

log = logging.getLogger("edc.portal.http")

# Requests that load balancers and Prometheus make every few seconds: counted, not logged.
QUIET_ROUTES = frozenset({"/healthz", "/readyz", "/metrics"})
UNMATCHED_ROUTE = "<unmatched>"
# Path parameters that go into the log context (and onto the access line).
CONTEXT_PARAMETERS = ("submission_id",)


def route_template(scope: Scope) -> str:
    """The template of the route that answered ``scope``, prefixes included; read after the
    application ran, from what the router left in the scope."""
    route = scope.get("route")
    template = getattr(route, "path", None)
    path = str(scope.get("path", ""))
    if isinstance(template, str):
        if ":path}" in template:  # a parameter spanning segments: the prefix is not countable
            return template
        # The route's own path lacks the prefixes of the routers it was included in; those are
        # the path's leading segments, as many as the route's path does not account for.
        segments = path.split("/")
        return "/".join(segments[: len(segments) - template.count("/")]) + template
    mounted = str(scope.get("root_path", ""))[len(str(scope.get("app_root_path", ""))) :]
    if mounted and path.startswith(mounted):  # a mounted application (the static files)
        return mounted + "/{path}"
    return UNMATCHED_ROUTE


def context_fields(path_params: Mapping[str, Any]) -> dict[str, object]:
    fields: dict[str, object] = {}
    for name in CONTEXT_PARAMETERS:
        value = path_params.get(name)
        if value is not None:
            # An id as the worker logs it: a number (the router hands over text).
            fields[name] = int(value) if str(value).isdigit() else str(value)
    return fields


async def request_log_context(request: Request) -> AsyncIterator[None]:
    """Application-wide dependency: the route's log lines carry the submission it is about."""
    with log_context(**context_fields(request.path_params)):
        yield


class RequestObserver:
    def __init__(self, app: ASGIApp, *, metrics: PortalMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        method = str(scope["method"])
        status = 500  # unless the application starts a response

        async def observed_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        started = time.perf_counter()
        with log_context(request_id=uuid.uuid4().hex[:16]):
            try:
                await self.app(scope, receive, observed_send)
            finally:
                seconds = time.perf_counter() - started
                route = route_template(scope)
                self.metrics.observe_request(
                    method=method, route=route, status=status, seconds=seconds
                )
                log.log(
                    logging.DEBUG if route in QUIET_ROUTES else logging.INFO,
                    "%s %s %d %.1f ms",
                    method,
                    scope.get("path", ""),
                    status,
                    seconds * 1000,
                    extra={
                        "method": method,
                        "route": route,
                        "status": status,
                        "duration_ms": round(seconds * 1000, 3),
                        **context_fields(scope.get("path_params") or {}),
                    },
                )
