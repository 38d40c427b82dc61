"""``/v1/brokers``: every registered broker with its status; maintenance and decommissioning of one."""

from __future__ import annotations

from aiohttp import web

from controller.state_machine import CommandRejected, Rejection, RejectKind
from rafka_shards.admin.http import int_param, json_response
from rafka_shards.admin.routes import AdminContext, Route
from rafka_shards.admin.views import brokers_json


def _broker_id(ctx: AdminContext, request: web.Request) -> int:
    broker_id = int_param(request, "id", 0, 2**31 - 1)
    if broker_id not in ctx.image.brokers:
        raise CommandRejected(Rejection(RejectKind.UNKNOWN_BROKER, f"broker {broker_id} is not registered"))
    return broker_id


async def brokers(ctx: AdminContext, _request: web.Request) -> web.Response:
    image = ctx.image
    return json_response(brokers_json(image, sorted(image.brokers)))


async def broker(ctx: AdminContext, request: web.Request) -> web.Response:
    broker_id = _broker_id(ctx, request)
    out = brokers_json(ctx.image, [broker_id])[0]
    local = next((s for s in ctx.ports.node.slots if s.broker_id == broker_id), None)
    if local is not None:
        session = local.session
        out["local_shard"] = local.index
        out["metadata_offset"] = None if session is None else session.applied_offset
        out["metadata_lag"] = None if session is None else session.metadata_lag
    quorum = ctx.ports.quorum
    if quorum.judges_leases:  # this node is the active controller: it knows how long the lease still runs
        out["lease_remaining_ms"] = quorum.lease_remaining_ms(broker_id)
    return json_response(out)


async def maintenance_on(ctx: AdminContext, request: web.Request) -> web.Response:
    broker_id = _broker_id(ctx, request)
    await ctx.cluster.set_maintenance(broker_id, True)
    return json_response(brokers_json(ctx.image, [broker_id])[0])


async def maintenance_off(ctx: AdminContext, request: web.Request) -> web.Response:
    broker_id = _broker_id(ctx, request)
    await ctx.cluster.set_maintenance(broker_id, False)
    return json_response(brokers_json(ctx.image, [broker_id])[0])


async def decommission(ctx: AdminContext, request: web.Request) -> web.Response:
    broker_id = _broker_id(ctx, request)
    await ctx.cluster.decommission(broker_id)
    return json_response(brokers_json(ctx.image, [broker_id])[0])


ROUTES = (
    Route("GET", "/v1/brokers", brokers, "every registered broker with its status and partition counts"),
    Route("GET", "/v1/brokers/{id}", broker, "one broker; lease and metadata lag where this node knows them"),
    Route("PUT", "/v1/brokers/{id}/maintenance", maintenance_on, "drain leadership, take no new replicas"),
    Route("DELETE", "/v1/brokers/{id}/maintenance", maintenance_off, "end maintenance"),
    Route(
        "PUT",
        "/v1/brokers/{id}/decommission",
        decommission,
        "no new replicas; its replicas move to other nodes; drained once none are left",
    ),
)
