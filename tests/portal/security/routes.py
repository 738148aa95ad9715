"""Every route of the app, found by walking it, so a route added later is tested without edits."""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.routing import APIRoute
from starlette.routing import Mount, Route

# FastAPI's own documentation routes: no data behind them.
DOCUMENTATION = {"/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc"}
_PARAM = re.compile(r"{([^}:]+)(?::[^}]+)?}")


@dataclass(frozen=True)
class Endpoint:
    method: str
    path: str

    @property
    def params(self) -> tuple[str, ...]:
        return tuple(_PARAM.findall(self.path))

    def url(self, values: Mapping[str, str]) -> str:
        missing = [name for name in self.params if name not in values]
        if missing:
            pytest.fail(
                f"{self.method} {self.path}: no test value for {missing}; "
                "add one to the security tests' path values"
            )
        return _PARAM.sub(lambda m: values[m.group(1)], self.path)

    def __str__(self) -> str:
        return f"{self.method} {self.path}"


def endpoints(app: FastAPI) -> list[Endpoint]:
    """Every (method, path) the app routes, HEAD aside (it answers as GET does)."""
    found = sorted(set(_walk(app.routes, "")), key=lambda e: (e.path, e.method))
    assert found, "no routes found: the walk no longer understands the app's routing"
    return found


def mounts(app: FastAPI) -> list[str]:
    """Paths of mounted applications (static files)."""
    return [route.path for route in app.routes if isinstance(route, Mount)]


def _walk(routes: Sequence[Any], prefix: str) -> Iterator[Endpoint]:
    for route in routes:
        if isinstance(route, APIRoute | Route):
            if route.path in DOCUMENTATION:
                continue
            for method in sorted((route.methods or set()) - {"HEAD"}):
                yield Endpoint(method, prefix + route.path)
        elif isinstance(route, Mount):
            continue  # served files: see test_path_traversal.py
        elif hasattr(route, "original_router"):  # a router included with a prefix
            yield from _walk(route.original_router.routes, prefix + route.include_context.prefix)
        else:
            pytest.fail(f"the security tests do not know how to walk {route!r}")
