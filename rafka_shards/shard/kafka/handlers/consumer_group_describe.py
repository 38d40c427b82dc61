"""ConsumerGroupDescribe (API key 69), versions 0-1: consumer groups of KIP-848 with their epochs, members,
subscriptions, current and target assignments.

Runs in a shard process. A classic group, or none, is GROUP_ID_NOT_FOUND, as in Kafka.
"""

from __future__ import annotations

from typing import Any

from controller.acls import AUTHORIZED_OPERATIONS_OMITTED, AclOperation, ResourceType
from rafka_shards.groups.assignors import Assignment
from rafka_shards.model import ErrorCode, KafkaError
from rafka_shards.protocol import kio_codec
from rafka_shards.shard.kafka.api import ApiHandler, RequestContext, ResponseBody

MEMBER_TYPE_CONSUMER = 1  # v1: 0 classic, 1 consumer (KIP-1099)


def _assignment(ctx: RequestContext, a: Assignment) -> dict[str, Any]:
    topics = ctx.manager.image.topics
    return {
        "topic_partitions": [
            {"topic_id": topics[t].topic_id, "topic_name": t, "partitions": sorted(ps)}
            for t, ps in sorted(a.items())
            if t in topics
        ]
    }


def _describe(ctx: RequestContext, group_id: str, with_operations: bool) -> dict[str, Any]:
    body: dict[str, Any] = {
        "error_code": 0,
        "error_message": None,
        "group_id": group_id,
        "group_state": "",
        "group_epoch": -1,
        "assignment_epoch": -1,
        "assignor_name": "",
        "members": [],
        "authorized_operations": (
            ctx.access.authorized_operations(ResourceType.GROUP, group_id)
            if with_operations
            else AUTHORIZED_OPERATIONS_OMITTED
        ),
    }
    try:
        ctx.access.require_group(AclOperation.DESCRIBE, group_id)
        g = ctx.groups.consumer_group(group_id)
        if g is None:
            raise KafkaError(ErrorCode.GROUP_ID_NOT_FOUND, f"group {group_id!r} is not a consumer group")
    except KafkaError as e:
        body.update(error_code=int(e.code), error_message=e.message)
        return body
    body.update(
        group_state=g.state_name,
        group_epoch=g.group_epoch,
        assignment_epoch=g.assignment_epoch,
        assignor_name=g.assignor,
    )
    body["members"] = [
        {
            "member_id": m.member_id,
            "instance_id": m.instance_id,
            "rack_id": m.rack_id,
            "member_epoch": m.member_epoch,
            "client_id": m.client_id,
            "client_host": m.client_host,
            "subscribed_topic_names": sorted(m.subscribed),
            "subscribed_topic_regex": m.regex or None,
            "assignment": _assignment(ctx, m.assigned),
            "target_assignment": _assignment(ctx, g.target.get(m.member_id, {})),
            "member_type": MEMBER_TYPE_CONSUMER,
        }
        for m in g.members.values()
    ]
    return body


async def handle(ctx: RequestContext, req: Any) -> ResponseBody | None:
    with_operations = bool(req.include_authorized_operations)
    groups = [_describe(ctx, str(g), with_operations) for g in req.group_ids]
    return kio_codec.encode_response(69, ctx.version, {"throttle_time": 0, "groups": groups})


HANDLER = ApiHandler(key=69, min_version=0, max_version=1, handle=handle)
