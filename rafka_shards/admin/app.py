"""The node's HTTP admin API (aiohttp + orjson): probes, ``/metrics``, brokers, topics, partitions, SCRAM users,
cluster health, the controller quorum, and an OpenAPI document of all of it at ``/v1/openapi.json``.

Runs in the controller process, on the listening socket the supervisor bound; every node serves it. The routes are
declared one module per resource in ``rafka_shards.admin.routes``; this module serves their tables. Reads come from
this node's applied metadata image after a ReadIndex barrier (``MetadataReader.read_barrier``), so a read on any
node sees every write acknowledged before it. Writes are metadata commands committed through the Raft quorum (a
follower forwards them to the leader) and answered once this node's shards applied them (``cluster_admin``). Every
response but ``/metrics`` (Prometheus text) is JSON; errors are described in ``rafka_shards.admin.http``.
"""

from __future__ import annotations

import functools
import os
import socket

from aiohttp import web

from rafka_shards.admin.cluster_admin import ClusterAdmin
from rafka_shards.admin.http import (
    ADMIN_SHUTDOWN_S,
    REQUEST_BODY_MAX_BYTES,
    Handler,
    errors,
    json_response,
    unavailable,
)
from rafka_shards.admin.metrics import NodeMetrics
from rafka_shards.admin.ports import AdminPorts, MetadataReader
from rafka_shards.admin.routes import (
    AdminContext,
    Route,
    brokers,
    cluster,
    controller,
    groups,
    node,
    openapi,
    partitions,
    security,
    topics,
)

CATCHING_UP = "its controller process is catching up with the metadata quorum"

ROUTES: tuple[Route, ...] = (
    *node.ROUTES,
    *brokers.ROUTES,
    *topics.ROUTES,
    *partitions.ROUTES,
    *groups.ROUTES,
    *security.ROUTES,
    *cluster.ROUTES,
    *controller.ROUTES,
    *openapi.ROUTES,
)


def _linearizable(metadata: MetadataReader, handler: Handler) -> Handler:
    """The handler sees every metadata change acknowledged before the request came, whichever node took it: this
    node's image has applied the leader's commit index of now (ReadIndex) before the handler runs."""

    async def run(request: web.Request) -> web.StreamResponse:
        await metadata.read_barrier()
        return await handler(request)

    return run


def build_app(ports: AdminPorts) -> web.Application:
    """The aiohttp application serving every route of ``ROUTES`` on ``ports``."""
    app = web.Application(client_max_size=REQUEST_BODY_MAX_BYTES, middlewares=[errors])
    ctx = AdminContext(
        ports=ports,
        cluster=ClusterAdmin(ports.metadata, ports.proposer, ports.node),
        metrics=NodeMetrics(ports.node, ports.quorum, ports.metadata, ports.metrics_dir, ports.data_dir),
        routes=ROUTES,
    )
    for route in ROUTES:
        handler: Handler = functools.partial(route.handler, ctx)
        if route.linearizable:
            handler = _linearizable(ports.metadata, handler)
        app.router.add_route(route.method, route.path, handler)
    return app


async def start_catching_up(listener: socket.socket) -> web.AppRunner:
    """Answer on the admin port while the controller process catches up with the metadata quorum (a node waiting
    for a majority of voters, or to be added to the quorum, can wait long): ``GET /v1/status/live`` 200 (the process
    runs: a liveness probe must not kill it for waiting), every other request 503 with ``retry_after_ms``. Served
    on a duplicate of ``listener``'s descriptor, so cleaning this runner up leaves the listener open for
    ``start_admin`` (connections arriving in between wait in its backlog)."""
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", _catching_up)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=ADMIN_SHUTDOWN_S)
    await runner.setup()
    await web.SockSite(runner, socket.socket(fileno=os.dup(listener.fileno()))).start()
    return runner


async def _catching_up(request: web.Request) -> web.Response:
    if request.method == "GET" and request.path == "/v1/status/live":
        return json_response({"status": "live", "detail": CATCHING_UP})
    return unavailable(f"the node is starting: {CATCHING_UP}")


async def start_admin(ports: AdminPorts, listener: socket.socket) -> web.AppRunner:
    """Serve the admin API on ``listener`` (bound by the supervisor) until the runner is cleaned up."""
    # When the node stops, requests in flight get ADMIN_SHUTDOWN_S to finish (aiohttp's default is 60 s, twice the
    # node's whole shutdown deadline): one waiting on a stopping shard must not hold the controller process up.
    runner = web.AppRunner(build_app(ports), access_log=None, shutdown_timeout=ADMIN_SHUTDOWN_S)
    await runner.setup()
    site = web.SockSite(runner, listener)
    await site.start()
    return runner
