"""DeleteGroups (API key 42), versions 0-2: delete empty groups and their committed offsets.

Runs in a shard process. A group with members gets NON_EMPTY_GROUP, an unknown one GROUP_ID_NOT_FOUND; a deleted
group's tombstones (its offsets, then the group) are written with acks=all before the answer.
"""

from __future__ import annotations

from typing import Any

from controller.acls import AclOperation
from rafka_shards.model import ErrorCode, KafkaError
from rafka_shards.protocol import kio_codec
from rafka_shards.shard.kafka.api import ApiHandler, RequestContext, ResponseBody


async def _delete(ctx: RequestContext, group_id: str) -> ErrorCode:
    if not group_id:
        return ErrorCode.INVALID_GROUP_ID
    try:
        ctx.access.require_group(AclOperation.DELETE, group_id)
        return await ctx.groups.delete(group_id)
    except KafkaError as e:
        return e.code


async def handle(ctx: RequestContext, req: Any) -> ResponseBody | None:
    results = [{"group_id": str(g), "error_code": int(await _delete(ctx, str(g)))} for g in req.groups_names]
    return kio_codec.encode_response(42, ctx.version, {"throttle_time": 0, "results": results})


HANDLER = ApiHandler(key=42, min_version=0, max_version=2, handle=handle)
