"""``/v1/cluster``: healthy or why not (controller, nodes, partitions), and the partition balancer. Answered locally."""

from __future__ import annotations

import dataclasses

from aiohttp import web

from rafka_shards.admin.http import json_response
from rafka_shards.admin.routes import AdminContext, Route
from rafka_shards.admin.views import health_overview


async def health(ctx: AdminContext, _request: web.Request) -> web.Response:
    return json_response(health_overview(ctx.image, ctx.ports.quorum.status()))


async def balancer(ctx: AdminContext, _request: web.Request) -> web.Response:
    """The partition balancer: its state, each broker's replica and leader counts, nodes gone and when their replicas
    are re-created, reassignments in progress. The counters and timers are this node's; the active controller's
    balancer is the one that proposes (``active``)."""
    quorum = ctx.ports.quorum
    st = quorum.status()
    out = dataclasses.asdict(quorum.balancer_status())
    out["node_id"] = st.node
    out["controller_leader"] = st.leader or None
    return json_response(out)


ROUTES = (
    Route(
        "GET",
        "/v1/cluster/health_overview",
        health,
        "healthy or why not: controller, nodes, partitions",
        linearizable=False,
    ),
    Route(
        "GET",
        "/v1/cluster/balancer",
        balancer,
        "the partition balancer: state, replica and leader counts per broker, gone nodes, moves in progress",
        linearizable=False,
    ),
)
