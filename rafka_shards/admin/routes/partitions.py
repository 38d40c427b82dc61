"""``/v1/partitions/{topic}/{partition}``: one partition with its offsets; leadership transfer and reassignment."""

from __future__ import annotations

from aiohttp import web

from rafka_shards.admin import requests as req
from rafka_shards.admin.http import int_param, json_response
from rafka_shards.admin.routes import AdminContext, Route
from rafka_shards.admin.views import partition_json


def _partition_key(request: web.Request) -> tuple[str, int]:
    return request.match_info["topic"], int_param(request, "partition", 0, 2**31 - 1)


async def partition(ctx: AdminContext, request: web.Request) -> web.Response:
    name, index = _partition_key(request)
    t, p = ctx.cluster.partition(name, index)
    offsets = await ctx.cluster.offsets(name, index)
    return json_response({**partition_json(t, p), "offsets": offsets})


async def transfer_leadership(ctx: AdminContext, request: web.Request) -> web.Response:
    name, index = _partition_key(request)
    ctx.cluster.partition(name, index)
    p = await ctx.cluster.transfer_leadership(name, index, req.parse_transfer(await request.read()))
    return json_response(partition_json(ctx.image.topics[name], p))


async def reassign(ctx: AdminContext, request: web.Request) -> web.Response:
    name, index = _partition_key(request)
    ctx.cluster.partition(name, index)
    p = await ctx.cluster.reassign(name, index, req.parse_replicas(await request.read()))
    return json_response(partition_json(ctx.image.topics[name], p))


ROUTES = (
    Route("GET", "/v1/partitions/{topic}/{partition}", partition, "leader, replicas, ISR, epochs and offsets"),
    Route(
        "POST",
        "/v1/partitions/{topic}/{partition}/transfer_leadership",
        transfer_leadership,
        "make an in-sync replica the leader (new leader epoch)",
        '{"target": 20}',
    ),
    Route(
        "POST",
        "/v1/partitions/{topic}/{partition}/replicas",
        reassign,
        "new replica list (preferred leader first); in-sync replicas must stay",
        '{"replicas": [0, 10, 20]}',
    ),
)
