"""The node's HTTP admin API (aiohttp + orjson): probes, ``/metrics``, brokers, topics, partitions, cluster health,
the controller quorum, and an OpenAPI document of all of it at ``/v1/openapi.json``.

Runs in the controller process, on the listening socket the supervisor bound; every node serves it. The routes are
declared one module per resource in ``rafka_shards.admin.routes``; this module serves their tables. Reads come from
this node's applied metadata image after a ReadIndex barrier (``MetadataReader.read_barrier``), so a read on any
node sees every write acknowledged before it. Writes are metadata commands committed through the Raft quorum (a
follower forwards them to the leader) and answered once this node's shards applied them (``cluster_admin``). Every
response but ``/metrics`` (Prometheus text) is JSON; errors are described in ``rafka_shards.admin.http``.
"""

from __future__ import annotations

import functools
import socket

from aiohttp import web

from rafka_shards.admin.cluster_admin import ClusterAdmin
from rafka_shards.admin.http import ADMIN_SHUTDOWN_S, REQUEST_BODY_MAX_BYTES, Handler, errors
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
    topics,
)

ROUTES: tuple[Route, ...] = (
    *node.ROUTES,
    *brokers.ROUTES,
    *topics.ROUTES,
    *partitions.ROUTES,
    *groups.ROUTES,
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


async def start_admin(ports: AdminPorts, listener: socket.socket) -> web.AppRunner:
    """Serve the admin API on ``listener`` (bound by the supervisor) until the runner is cleaned up."""
    # When the node stops, requests in flight get ADMIN_SHUTDOWN_S to finish (aiohttp's default is 60 s, twice the
    # node's whole shutdown deadline): one waiting on a stopping shard must not hold the controller process up.
    runner = web.AppRunner(build_app(ports), access_log=None, shutdown_timeout=ADMIN_SHUTDOWN_S)
    await runner.setup()
    site = web.SockSite(runner, listener)
    await site.start()
    return runner
