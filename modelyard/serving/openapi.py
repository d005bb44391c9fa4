"""The OpenAPI document of a model server, derived from the model's input signature."""

from __future__ import annotations

from typing import Any

from .signature import InputSchema, openapi_components

_REF = "#/components/schemas/"
_ERRORS = (
    (400, "the body is not one of the accepted formats"),
    (413, "the body or its row count is over the limit"),
    (415, "unsupported content type"),
    (422, "the rows do not fit the model's signature (the field is named)"),
    (500, "the model failed"),
)


def openapi_document(name: str, schema: InputSchema | None) -> dict[str, Any]:
    columns = ", ".join(schema.names) if schema is not None else "(no signature)"
    error = {"content": {"application/json": {"schema": {"$ref": _REF + "InvocationError"}}}}
    responses: dict[str, Any] = {
        "200": {
            "description": "one prediction per row",
            "content": {
                "application/json": {
                    "schema": {"type": "object", "properties": {"predictions": {"type": "array"}}}
                }
            },
        },
        **{str(code): {"description": what, **error} for code, what in _ERRORS},
    }
    ok = {"responses": {"200": {"description": "ok"}}}
    return {
        "openapi": "3.1.0",
        "info": {
            "title": f"modelyard model server: {name}",
            "version": "1",
            "description": f"Inputs: {columns}",
        },
        "paths": {
            "/invocations": {
                "post": {
                    "summary": "Predict: one prediction per input row",
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {"schema": {"$ref": _REF + "InvocationRequest"}},
                            "text/csv": {"schema": {"type": "string"}},
                        },
                    },
                    "responses": responses,
                }
            },
            "/ping": {"get": {"summary": "healthy (SageMaker's health check)", **ok}},
            "/health": {"get": {"summary": "what is served", **ok}},
            "/metrics": {"get": {"summary": "Prometheus metrics", **ok}},
        },
        "components": openapi_components(schema),
    }
