"""``/v1/openapi.json``: an OpenAPI 3.0 document built from the route tables, so it cannot drift from the routes."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson
from aiohttp import web

from rafka_shards.admin.http import json_response
from rafka_shards.admin.routes import AdminContext, Route
from rafka_shards.security.admin_auth import OPEN_PREFIX

_ERROR_SCHEMA = {
    "type": "object",
    "required": ["error", "message"],
    "properties": {
        "error": {"type": "string"},
        "message": {"type": "string"},
        "field": {"type": "string"},
        "retry_after_ms": {"type": "integer"},
    },
}


def _operation(r: Route) -> dict[str, Any]:
    error = {"$ref": "#/components/schemas/Error"}
    params = [
        {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
        for name in (part[1:-1] for part in r.path.split("/") if part.startswith("{"))
    ]
    op: dict[str, Any] = {
        "summary": r.summary,
        "operationId": f"{r.method.lower()}_{r.handler.__name__}",
        "parameters": params,
        "responses": {
            str(r.status): {"description": "OK"},
            "400": {"description": "bad input, field named", "content": {"application/json": {"schema": error}}},
            "401": {"description": "admin_api_require_auth: credentials missing or not valid"},
            "403": {"description": "admin_api_require_auth: a change by a principal not in super_users"},
            "404": {"description": "unknown topic, partition, broker or user"},
            "409": {"description": "the cluster's state does not allow it"},
            "503": {"description": "no controller leader; retry after retry_after_ms"},
        },
    }
    if r.path.startswith(OPEN_PREFIX):
        op["security"] = []  # the probes never ask for credentials
    if r.body is not None:
        op["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": {"type": "object"}, "example": orjson.loads(r.body)}},
        }
    return op


def openapi_document(routes: Sequence[Route]) -> dict[str, Any]:
    """OpenAPI 3.0 of ``routes``: one operation per route, its path parameters, example body and responses."""
    paths: dict[str, dict[str, Any]] = {}
    for r in routes:
        paths.setdefault(r.path, {})[r.method.lower()] = _operation(r)
    return {
        "openapi": "3.0.3",
        "info": {"title": "rafka_shards admin API", "version": "1"},
        "paths": paths,
        "components": {
            "schemas": {"Error": _ERROR_SCHEMA},
            # Asked for only with admin_api_require_auth (never for /v1/status/*): a SCRAM user or a bearer token.
            "securitySchemes": {
                "basic": {"type": "http", "scheme": "basic"},
                "bearer": {"type": "http", "scheme": "bearer"},
            },
        },
        "security": [{"basic": []}, {"bearer": []}],
    }


async def openapi(ctx: AdminContext, _request: web.Request) -> web.Response:
    return json_response(openapi_document(ctx.routes))


ROUTES = (Route("GET", "/v1/openapi.json", openapi, "this document", linearizable=False),)
