"""The OpenAPI document, corrected where FastAPI's defaults describe other answers than ours.

Every refusal is an ``ErrorOut`` sent as JSON by the handlers in ``edc.portal.errors``, so: a 422
is documented as ``ErrorOut`` (FastAPI documents its own ``HTTPValidationError``, which the
validation handler replaces); the refusals of routes whose success is CSV or a file are
documented as JSON (FastAPI gives them the route's media type); and a route taking a body
documents the 400 FastAPI answers when the body cannot be parsed at all.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

ERROR_REF = "#/components/schemas/ErrorOut"
JSON = "application/json"
# FastAPI's own validation error shapes, unused once the 422s are ours.
FASTAPI_VALIDATION_SCHEMAS = ("HTTPValidationError", "ValidationError")
INVALID_REQUEST = "The request's parameters or body are invalid; `detail` says which."
UNPARSABLE_BODY = "The body cannot be parsed (not JSON, or not UTF-8)."


def install(app: FastAPI) -> None:
    """Make ``app.openapi()``, and so ``/openapi.json`` and ``/docs``, give the corrected schema."""
    generate = app.openapi

    def corrected() -> dict[str, Any]:
        schema = generate()  # cached by FastAPI; the corrections below are idempotent
        correct_error_responses(schema)
        return schema

    app.openapi = corrected  # type: ignore[method-assign]


def correct_error_responses(schema: dict[str, Any]) -> None:
    for operation in _operations(schema):
        responses: dict[str, Any] = operation.setdefault("responses", {})
        if "requestBody" in operation and "400" not in responses:
            responses["400"] = _error(UNPARSABLE_BODY)
        for status, response in responses.items():
            if status == "422":
                responses[status] = _error(INVALID_REQUEST)
            elif status[0] in "45":
                _error_as_json(response)
    components = schema.get("components", {}).get("schemas", {})
    for name in FASTAPI_VALIDATION_SCHEMAS:
        components.pop(name, None)


def _error(description: str) -> dict[str, Any]:
    return {"description": description, "content": {JSON: {"schema": {"$ref": ERROR_REF}}}}


def _error_as_json(response: dict[str, Any]) -> None:
    content: dict[str, Any] = response.get("content", {})
    for media_type, body in list(content.items()):
        if media_type != JSON and body.get("schema", {}).get("$ref") == ERROR_REF:
            del content[media_type]
            content[JSON] = body


def _operations(schema: dict[str, Any]) -> list[dict[str, Any]]:
    methods = ("get", "put", "post", "delete", "options", "head", "patch", "trace")
    return [
        operation
        for path_item in schema.get("paths", {}).values()
        for method, operation in path_item.items()
        if method in methods
    ]
