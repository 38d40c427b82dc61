"""OffsetDelete (API key 47), version 0: delete some committed offsets of a group (KIP-496).

Runs in a shard process. Partitions of topics the group's consumers subscribe to are refused with
GROUP_SUBSCRIBED_TO_TOPIC; a group of another protocol type must be empty (NON_EMPTY_GROUP).
"""

from __future__ import annotations

from typing import Any

from controller.acls import AclOperation
from rafka_shards.model import ErrorCode, KafkaError
from rafka_shards.protocol import kio_codec
from rafka_shards.shard.kafka.api import ApiHandler, RequestContext, ResponseBody


async def handle(ctx: RequestContext, req: Any) -> ResponseBody | None:
    image = ctx.manager.image
    asked = [(str(t.name), int(p.partition_index)) for t in req.topics for p in t.partitions]
    known = [tp for tp in asked if tp[0] in image.topics and 0 <= tp[1] < len(image.topics[tp[0]].partitions)]
    errors = {tp: ErrorCode.UNKNOWN_TOPIC_OR_PARTITION for tp in asked}
    try:
        if not req.group_id:
            raise KafkaError(ErrorCode.INVALID_GROUP_ID, "the group id is empty")
        # DELETE on the group, then READ on each topic (a denied topic's partitions are not touched).
        ctx.access.require_group(AclOperation.DELETE, str(req.group_id))
        readable = {name: ctx.access.topic(AclOperation.READ, name) for name in dict.fromkeys(t for t, _ in known)}
        errors.update({tp: ErrorCode.TOPIC_AUTHORIZATION_FAILED for tp in known if not readable[tp[0]]})
        known = [tp for tp in known if readable[tp[0]]]
        error, deleted = await ctx.groups.delete_offsets(str(req.group_id), known)
    except KafkaError as e:
        error, deleted = e.code, {}
    errors.update(deleted)
    topics: dict[str, list[dict[str, int]]] = {}
    if error is ErrorCode.NONE:
        for (name, index), code in errors.items():
            topics.setdefault(name, []).append({"partition_index": index, "error_code": int(code)})
    body = {
        "error_code": int(error),
        "throttle_time": 0,
        "topics": [{"name": n, "partitions": ps} for n, ps in topics.items()],
    }
    return kio_codec.encode_response(47, ctx.version, body)


HANDLER = ApiHandler(key=47, min_version=0, max_version=0, handle=handle)
