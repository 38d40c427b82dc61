"""Heartbeat (API key 12), versions 0-4: a member is alive and learns whether a rebalance began.

Runs in a shard process. REBALANCE_IN_PROGRESS tells the member to rejoin; v3+ carries ``group.instance.id``.
"""

from __future__ import annotations

from typing import Any

from controller.acls import AclOperation
from rafka_shards.model import KafkaError
from rafka_shards.protocol import kio_codec
from rafka_shards.shard.kafka.api import ApiHandler, RequestContext, ResponseBody


async def handle(ctx: RequestContext, req: Any) -> ResponseBody | None:
    try:
        ctx.access.require_group(AclOperation.READ, str(req.group_id))
        error = ctx.groups.heartbeat(
            str(req.group_id), str(req.member_id), getattr(req, "group_instance_id", None), int(req.generation_id)
        )
    except KafkaError as e:
        error = e.code
    return kio_codec.encode_response(12, ctx.version, {"throttle_time": 0, "error_code": int(error)})


HANDLER = ApiHandler(key=12, min_version=0, max_version=4, handle=handle)
