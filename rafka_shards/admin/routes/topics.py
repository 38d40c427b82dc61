"""``/v1/topics``: list, create, read (with the offsets of partitions led on this node), change and delete topics.

Creating and changing go through the topics frontend (``controller.topics``, by way of ``ClusterAdmin``), as Kafka's
CreateTopics and CreatePartitions do in the shards.
"""

from __future__ import annotations

from aiohttp import web

from controller.image import TopicImage
from controller.state_machine import CommandRejected, Rejection, RejectKind
from rafka_shards.admin import requests as req
from rafka_shards.admin.http import json_response, unavailable
from rafka_shards.admin.routes import AdminContext, Route
from rafka_shards.admin.views import partition_json, topic_json


def _topic(ctx: AdminContext, name: str) -> TopicImage:
    t = ctx.image.topics.get(name)
    if t is None:
        raise CommandRejected(Rejection(RejectKind.UNKNOWN_TOPIC, f"topic {name!r} does not exist"))
    return t


async def topics(ctx: AdminContext, _request: web.Request) -> web.Response:
    return json_response([topic_json(t) for t in sorted(ctx.image.topics.values(), key=lambda t: t.name)])


def _starting(ctx: AdminContext, e: CommandRejected) -> web.Response | None:
    """A refusal for want of brokers while this node's own have not all registered is transient: 503 with
    ``retry_after_ms``, not a 400 that says the request was wrong (a single node's first seconds: 0 brokers)."""
    if e.rejection.kind is RejectKind.INVALID_REPLICATION_FACTOR and not ctx.ports.node.ready:
        return unavailable(f"this node is starting (its brokers have not all registered yet): {e.rejection.message}")
    return None


async def create_topic(ctx: AdminContext, request: web.Request) -> web.Response:
    ports = ctx.ports
    body = req.parse_create_topic(await request.read(), ports.default_partitions, ports.default_replication_factor)
    try:
        t = await ctx.cluster.create_topic(body)
    except CommandRejected as e:
        if (starting := _starting(ctx, e)) is None:
            raise
        return starting
    return json_response(topic_json(t), status=201)


async def topic(ctx: AdminContext, request: web.Request) -> web.Response:
    t = _topic(ctx, request.match_info["name"])
    partitions = [partition_json(t, p) for p in t.partitions]
    stats = await ctx.ports.node.gather_stats()
    local = {(ps.topic, ps.partition): ps for st in stats.values() for ps in st.partitions}
    for entry in partitions:
        served = local.get((t.name, entry["partition"]))
        if served is not None:  # led by a shard of this node: its offsets (others: /v1/partitions/...)
            entry.update(
                log_start_offset=served.log_start_offset,
                high_watermark=served.high_watermark,
                log_end_offset=served.log_end_offset,
                size_bytes=served.size_bytes,
            )
    return json_response({**topic_json(t), "partitions": partitions})


async def patch_topic(ctx: AdminContext, request: web.Request) -> web.Response:
    name = request.match_info["name"]
    _topic(ctx, name)  # an unknown topic is a 404 whatever the body says
    try:
        t = await ctx.cluster.patch_topic(name, req.parse_patch_topic(await request.read()))
    except CommandRejected as e:  # new partitions are placed as a new topic's are
        if (starting := _starting(ctx, e)) is None:
            raise
        return starting
    return json_response(topic_json(t))


async def delete_topic(ctx: AdminContext, request: web.Request) -> web.Response:
    name = request.match_info["name"]
    await ctx.cluster.delete_topic(name)
    return json_response({"deleted": name})


ROUTES = (
    Route("GET", "/v1/topics", topics, "every topic"),
    Route(
        "POST",
        "/v1/topics",
        create_topic,
        "create a topic (201); partitions and replication_factor default to the node's settings",
        '{"name": "orders", "partitions": 6, "replication_factor": 1, "configs": {"retention.ms": "86400000"}}',
        status=201,
    ),
    Route("GET", "/v1/topics/{name}", topic, "a topic with its partitions (offsets of those led on this node)"),
    Route(
        "PATCH",
        "/v1/topics/{name}",
        patch_topic,
        "add partitions, change the replication factor, set configs (null deletes one)",
        '{"partitions": 12, "configs": {"retention.ms": "3600000", "segment.ms": null}}',
    ),
    Route("DELETE", "/v1/topics/{name}", delete_topic, "delete a topic and its data"),
)
