"""ConsumerGroupHeartbeat (API key 68), versions 0-1: the consumer group protocol of KIP-848.

Runs in a shard process; the group's state is ``rafka_shards.groups.consumer`` on the coordinator. One request does
what JoinGroup, SyncGroup and Heartbeat do in the classic protocol: it joins (member epoch 0), reports the
partitions the member owns, and gets back the member epoch and its assignment, computed on the coordinator by a
server assignor (``uniform`` by default, or ``range``). Topics travel as topic ids. v1 (KIP-1082): the client names
itself (member id required) and may subscribe with a regular expression, matched in full against the names of the
non-internal topics (Python's ``re``; Kafka uses RE2/J), re-evaluated as topics come and go.
"""

from __future__ import annotations

from typing import Any

from controller.acls import AclOperation
from rafka_shards.groups.consumer import HeartbeatRequest, HeartbeatResult
from rafka_shards.model import ErrorCode, KafkaError
from rafka_shards.protocol import kio_codec
from rafka_shards.shard.authz import AUTHORIZATION_FAILED_MESSAGE
from rafka_shards.shard.kafka.api import ApiHandler, RequestContext, ResponseBody


def _owned(ctx: RequestContext, topic_partitions: Any) -> dict[str, frozenset[int]] | None:
    if topic_partitions is None:
        return None
    names = ctx.manager.image.topics_by_id
    return {names[t.topic_id]: frozenset(int(p) for p in t.partitions) for t in topic_partitions if t.topic_id in names}


def _request(ctx: RequestContext, req: Any) -> HeartbeatRequest:
    subscribed = req.subscribed_topic_names
    return HeartbeatRequest(
        group_id=str(req.group_id),
        member_id=str(req.member_id),
        member_epoch=int(req.member_epoch),
        instance_id=req.instance_id,
        rack_id=req.rack_id,
        rebalance_timeout_ms=int(req.rebalance_timeout.total_seconds() * 1000),
        subscribed=None if subscribed is None else tuple(str(t) for t in subscribed),
        regex=getattr(req, "subscribed_topic_regex", None),
        assignor=req.server_assignor,
        owned=_owned(ctx, req.topic_partitions),
        client_id=ctx.header.client_id or "",
        client_host=ctx.client_host,
        version=ctx.version,
    )


async def handle(ctx: RequestContext, req: Any) -> ResponseBody | None:
    try:
        # READ on the group; DESCRIBE on every subscribed topic, else the heartbeat fails.
        ctx.access.require_group(AclOperation.READ, str(req.group_id))
        subscribed = req.subscribed_topic_names or ()
        if not all([ctx.access.topic(AclOperation.DESCRIBE, str(t)) for t in subscribed]):
            raise KafkaError(ErrorCode.TOPIC_AUTHORIZATION_FAILED, AUTHORIZATION_FAILED_MESSAGE)
        result = await ctx.groups.consumer_heartbeat(_request(ctx, req))
    except KafkaError as e:
        result = HeartbeatResult(e.code, e.message)
    assignment = None
    if result.assignment is not None:
        topics = ctx.manager.image.topics
        assignment = {
            "topic_partitions": [
                {"topic_id": topics[t].topic_id, "partitions": sorted(ps)}
                for t, ps in sorted(result.assignment.items())
                if t in topics
            ]
        }
    body = {
        "throttle_time": 0,
        "error_code": int(result.error),
        "error_message": result.message,
        "member_id": result.member_id,
        "member_epoch": result.member_epoch,
        "heartbeat_interval": result.heartbeat_interval_ms,
        "assignment": assignment,
    }
    return kio_codec.encode_response(68, ctx.version, body)


HANDLER = ApiHandler(key=68, min_version=0, max_version=1, handle=handle)
