"""``/v1/cluster/health_overview``: healthy, or why not (controller, nodes, partitions). Answered locally."""

from __future__ import annotations

from aiohttp import web

from rafka_shards.admin.http import json_response
from rafka_shards.admin.routes import AdminContext, Route
from rafka_shards.admin.views import health_overview


async def health(ctx: AdminContext, _request: web.Request) -> web.Response:
    return json_response(health_overview(ctx.image, ctx.ports.quorum.status()))


ROUTES = (
    Route(
        "GET",
        "/v1/cluster/health_overview",
        health,
        "healthy or why not: controller, nodes, partitions",
        linearizable=False,
    ),
)
