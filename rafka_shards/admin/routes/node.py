"""This node: readiness and liveness probes, its shard processes, and ``/metrics``. Answered locally (no barrier)."""

from __future__ import annotations

import dataclasses

from aiohttp import web

from rafka_shards.admin.http import error_response, json_response
from rafka_shards.admin.metrics import CONTENT_TYPE
from rafka_shards.admin.routes import AdminContext, Route


async def ready(ctx: AdminContext, _request: web.Request) -> web.Response:
    node = ctx.ports.node
    if node.ready:
        return json_response({"status": "ready", "shards": node.shard_count})
    down = [s.index for s in node.slots if not s.ready]
    return error_response(503, "not_ready", f"the node is starting, stopping, or shard(s) {down} are not ready")


async def live(_ctx: AdminContext, _request: web.Request) -> web.Response:
    return json_response({"status": "live"})


async def shards(ctx: AdminContext, _request: web.Request) -> web.Response:
    out = []
    stats = await ctx.ports.node.gather_stats()
    for s in ctx.ports.node.slots:
        session = s.session
        live = stats.get(s.index)
        out.append(
            {
                "shard": s.index,
                "broker_id": s.broker_id,
                "listen": s.listen,
                "pid": s.pid,
                "ready": s.ready,
                "restarts": s.restarts_total,
                "last_exit": s.last_exit,
                "metadata_offset": -1 if session is None else session.applied_offset,
                "metadata_lag": None if session is None else session.metadata_lag,
                "connections": None if live is None else live.connections,
                "cleaner": None if live is None else dataclasses.asdict(live.cleaner),
            }
        )
    return json_response(out)


async def prometheus(ctx: AdminContext, _request: web.Request) -> web.Response:
    body = await ctx.metrics.render()
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})


ROUTES = (
    Route(
        "GET",
        "/v1/status/ready",
        ready,
        "200 once every shard caught up, registered and accepts; else 503",
        linearizable=False,
    ),
    Route("GET", "/v1/status/live", live, "200 while the controller process's event loop runs", linearizable=False),
    Route(
        "GET",
        "/v1/shards",
        shards,
        "this node's shard processes: pid, readiness, restarts, metadata lag",
        linearizable=False,
    ),
    Route("GET", "/metrics", prometheus, "Prometheus text: shards, partitions, Raft", linearizable=False),
)
