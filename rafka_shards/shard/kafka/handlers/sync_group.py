"""SyncGroup (API key 14), versions 0-5: the leader hands out the assignment; every member receives its share.

Runs in a shard process. The leader's assignment is written to ``__consumer_offsets`` (acks=all) before any member
gets its share, so a coordinator fail-over never forgets an assignment that was handed out. v5+ states the protocol
type and name, checked against the group's (INCONSISTENT_GROUP_PROTOCOL).
"""

from __future__ import annotations

from typing import Any

from controller.acls import AclOperation
from rafka_shards.groups.classic import SyncResult
from rafka_shards.model import ErrorCode, KafkaError
from rafka_shards.protocol import kio_codec
from rafka_shards.shard.kafka.api import ApiHandler, RequestContext, ResponseBody


async def handle(ctx: RequestContext, req: Any) -> ResponseBody | None:
    assignments: dict[str, bytes] = {}
    for a in req.assignments:
        assignments[str(a.member_id)] = bytes(a.assignment)
    protocol = (getattr(req, "protocol_type", None), getattr(req, "protocol_name", None))
    try:
        ctx.access.require_group(AclOperation.READ, str(req.group_id))
        if len(assignments) != len(req.assignments):
            raise KafkaError(ErrorCode.INVALID_REQUEST, "the assignment names a member twice")
        result = await ctx.groups.sync(
            str(req.group_id),
            str(req.member_id),
            getattr(req, "group_instance_id", None),
            int(req.generation_id),
            protocol,
            assignments,
        )
    except KafkaError as e:
        result = SyncResult(e.code)
    body = {
        "throttle_time": 0,
        "error_code": int(result.error),
        "protocol_type": result.protocol_type,
        "protocol_name": result.protocol_name,
        "assignment": result.assignment,
    }
    return kio_codec.encode_response(14, ctx.version, body)


HANDLER = ApiHandler(key=14, min_version=0, max_version=5, handle=handle)
