"""The admin API's routes, one module per resource, each declaring its routes in a ``ROUTES`` table.

Runs in the controller process. A ``Route`` says everything the server and the OpenAPI document need: method, path,
handler, summary, an example request body, the status of success, and whether the handler reads the metadata image
after a ReadIndex barrier. ``rafka_shards.admin.app`` registers every table and ``openapi`` builds the document from
the same tables, so the two cannot drift apart. Handlers take the ``AdminContext`` and the request.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from aiohttp import web

from controller.image import MetadataImage
from rafka_shards.admin.cluster_admin import ClusterAdmin
from rafka_shards.admin.metrics import NodeMetrics
from rafka_shards.admin.ports import AdminPorts


@dataclass(frozen=True, slots=True)
class AdminContext:
    """What every handler may use: the ports it was given, and the objects built on them once per app."""

    ports: AdminPorts
    cluster: ClusterAdmin
    metrics: NodeMetrics
    routes: tuple[Route, ...]  # every route served (the OpenAPI document describes them)

    @property
    def image(self) -> MetadataImage:
        return self.ports.metadata.image


RouteHandler = Callable[[AdminContext, web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True, slots=True)
class Route:
    method: str
    path: str
    handler: RouteHandler  # its name is the OpenAPI operationId's suffix
    summary: str
    body: str | None = None  # a JSON example of the request body (the body is a JSON object)
    status: int = 200  # the status of a successful answer
    linearizable: bool = True  # reads the metadata image after a ReadIndex barrier (probes and quorum views: local)
