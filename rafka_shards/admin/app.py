"""The node's HTTP admin API (aiohttp + orjson): probes, ``/metrics``, brokers, topics, partitions, SCRAM users,
cluster health, the controller quorum, and an OpenAPI document of all of it at ``/v1/openapi.json``.

Runs in the controller process, on the listening socket the supervisor bound; every node serves it. The routes are
declared one module per resource in ``rafka_shards.admin.routes``; this module serves their tables. Reads come from
this node's applied metadata image after a ReadIndex barrier (``MetadataReader.read_barrier``), so a read on any
node sees every write acknowledged before it. Writes are metadata commands committed through the Raft quorum (a
follower forwards them to the leader) and answered once this node's shards applied them (``cluster_admin``). Every
response but ``/metrics`` (Prometheus text) is JSON; errors are described in ``rafka_shards.admin.http``.

Security (issue 18): with ``admin_api_require_auth`` every request but the probes needs credentials and changes need
a superuser (``rafka_shards.admin.auth``); with ``admin_ssl_cert_file`` the port speaks HTTPS only, its certificate
files reloaded when they change (``rafka_shards.security.tls.ReloadingContext``, checked by a task each app owns).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import socket
import time
from collections.abc import AsyncIterator

from aiohttp import web

from rafka_shards.admin.audit import AuditingProposer, audit_middleware
from rafka_shards.admin.auth import AdminAuth, AuthProbe
from rafka_shards.admin.bootstrap import create_bootstrap_user
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
from rafka_shards.admin.ports import AdminPorts, AdminSecurity, MetadataReader
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
from rafka_shards.security.audit import NULL_SINK, AuditSink
from rafka_shards.security.tls import Reloaded, ReloadFailed, ReloadingContext

log = logging.getLogger(__name__)

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


def build_app(ports: AdminPorts, audit: AuditSink = NULL_SINK) -> web.Application:
    """The aiohttp application serving every route of ``ROUTES`` on ``ports``; changes and refusals are recorded in
    ``audit`` (``rafka_shards.admin.audit``: its middleware stays first, so it sees every final status, the
    authentication middleware's 401 and 403 included)."""
    probe = AuthProbe()
    auth = AdminAuth(ports.security, ports.metadata, probe)
    middlewares = [audit_middleware(audit), errors, auth.middleware]
    app = web.Application(client_max_size=REQUEST_BODY_MAX_BYTES, middlewares=middlewares)
    ctx = AdminContext(
        ports=ports,
        cluster=ClusterAdmin(ports.metadata, AuditingProposer(ports.proposer, audit), ports.node, ports.inter_broker),
        metrics=NodeMetrics(
            ports.node, ports.quorum, ports.metadata, ports.metrics_dir, ports.data_dir, ports.inter_broker
        ),
        routes=ROUTES,
    )
    ctx.metrics.registry.register(probe)
    bootstrap_user = ports.security.bootstrap_user
    if bootstrap_user is not None:

        async def bootstrapping(_app: web.Application) -> AsyncIterator[None]:
            task = asyncio.get_running_loop().create_task(
                create_bootstrap_user(ctx.cluster, bootstrap_user), name="bootstrap user"
            )
            task.add_done_callback(_log_failure)
            yield
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

        app.cleanup_ctx.append(bootstrapping)
    for route in ROUTES:
        handler: Handler = functools.partial(route.handler, ctx)
        if route.linearizable:
            handler = _linearizable(ports.metadata, handler)
        app.router.add_route(route.method, route.path, handler)
    return app


def _log_failure(task: asyncio.Task[bool]) -> None:
    # A bug in the bootstrap task is said when it happens, not lost; the node keeps serving without the user.
    if not task.cancelled() and (exc := task.exception()) is not None:
        log.error("creating the bootstrap user failed", exc_info=exc)


def _monotonic_ms() -> int:
    return time.monotonic_ns() // 1_000_000


def admin_tls(security: AdminSecurity) -> ReloadingContext | None:
    """The admin port's TLS context (None: plain HTTP); raises ``TlsConfigError`` if the files make none."""
    return None if security.tls is None else ReloadingContext(security.tls, _monotonic_ms())


async def _reload_tls(tls: ReloadingContext) -> None:
    """New handshakes use the certificate files as they are now (rotated without a restart)."""
    while True:
        await asyncio.sleep(max(0, tls.next_check_ms - _monotonic_ms()) / 1000)
        outcome = tls.maybe_reload(_monotonic_ms())
        if isinstance(outcome, Reloaded):
            log.info("admin API: reloaded %s (reload %d)", ", ".join(outcome.changed), outcome.reloads)
        elif isinstance(outcome, ReloadFailed):
            log.error("admin API: keeping the certificate in use: %s", outcome.error)


def _serve_tls(app: web.Application, tls: ReloadingContext | None) -> None:
    """The app owns the reload task: started with it, cancelled and awaited when it is cleaned up."""
    if tls is None:
        return

    async def reloading(_app: web.Application) -> AsyncIterator[None]:
        task = asyncio.get_running_loop().create_task(_reload_tls(tls), name="admin TLS reload")
        yield
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    app.cleanup_ctx.append(reloading)


async def start_catching_up(listener: socket.socket, tls: ReloadingContext | None = None) -> web.AppRunner:
    """Answer on the admin port while the controller process catches up with the metadata quorum (a node waiting
    for a majority of voters, or to be added to the quorum, can wait long): ``GET /v1/status/live`` 200 (the process
    runs: a liveness probe must not kill it for waiting), every other request 503 with ``retry_after_ms``. Served
    on a duplicate of ``listener``'s descriptor, so cleaning this runner up leaves the listener open for
    ``start_admin`` (connections arriving in between wait in its backlog)."""
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", _catching_up)
    _serve_tls(app, tls)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=ADMIN_SHUTDOWN_S)
    await runner.setup()
    sock = socket.socket(fileno=os.dup(listener.fileno()))
    await web.SockSite(runner, sock, ssl_context=None if tls is None else tls.context).start()
    return runner


async def _catching_up(request: web.Request) -> web.Response:
    if request.method == "GET" and request.path == "/v1/status/live":
        return json_response({"status": "live", "detail": CATCHING_UP})
    return unavailable(f"the node is starting: {CATCHING_UP}")


async def start_admin(
    ports: AdminPorts, listener: socket.socket, tls: ReloadingContext | None = None, audit: AuditSink = NULL_SINK
) -> web.AppRunner:
    """Serve the admin API on ``listener`` (bound by the supervisor) until the runner is cleaned up; over HTTPS
    with ``tls`` (``admin_tls``); changes recorded in ``audit``."""
    app = build_app(ports, audit)
    _serve_tls(app, tls)
    # When the node stops, requests in flight get ADMIN_SHUTDOWN_S to finish (aiohttp's default is 60 s, twice the
    # node's whole shutdown deadline): one waiting on a stopping shard must not hold the controller process up.
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=ADMIN_SHUTDOWN_S)
    await runner.setup()
    site = web.SockSite(runner, listener, ssl_context=None if tls is None else tls.context)
    await site.start()
    return runner
