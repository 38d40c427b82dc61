"""OffsetFetch (API key 9), versions 1-9: a group's committed offsets.

Runs in a shard process. v2+ may ask for every partition the group committed (topics null) and has a top-level
error; v8+ asks for several groups at once (KIP-709). A partition without a commit gets offset -1 and no error.
The answer comes from the coordinator's state, which holds only commits every in-sync replica has.
"""

from __future__ import annotations

from typing import Any

from controller.acls import AclOperation, ResourceType
from rafka_shards.model import ErrorCode, KafkaError
from rafka_shards.protocol import kio_codec
from rafka_shards.shard.kafka.api import ApiHandler, RequestContext, ResponseBody


def _group(ctx: RequestContext, group_id: str, topics: Any) -> tuple[ErrorCode, list[dict[str, Any]]]:
    asked = None if topics is None else [(str(t.name), int(i)) for t in topics for i in t.partition_indexes]
    access = ctx.access
    try:
        if not group_id:
            raise KafkaError(ErrorCode.INVALID_GROUP_ID, "the group id is empty")
        access.require_group(AclOperation.DESCRIBE, group_id)  # DESCRIBE on each group
        committed = ctx.groups.committed(group_id, asked)
    except KafkaError as e:
        if ctx.version >= 2:
            return e.code, []
        committed, asked = {}, asked or []
        return ErrorCode.NONE, _topics(asked, committed, e.code)
    if asked is None:  # every topic of the group: only those the principal may describe, silently
        listed = [
            tp
            for tp in sorted(committed)
            if access.allows(AclOperation.DESCRIBE, ResourceType.TOPIC, tp[0], audit=False)
        ]
        return ErrorCode.NONE, _topics(listed, committed, ErrorCode.NONE)
    # Named topics: DESCRIBE on each, else TOPIC_AUTHORIZATION_FAILED on its partitions.
    described = {name: access.topic(AclOperation.DESCRIBE, name) for name in dict.fromkeys(t for t, _ in asked)}
    allowed = [tp for tp in asked if described[tp[0]]]
    denied = [tp for tp in asked if not described[tp[0]]]
    out = _topics(allowed, committed, ErrorCode.NONE)
    return ErrorCode.NONE, out + _topics(denied, {}, ErrorCode.TOPIC_AUTHORIZATION_FAILED)


def _topics(asked: list[tuple[str, int]], committed: dict[Any, Any], error: ErrorCode) -> list[dict[str, Any]]:
    topics: dict[str, list[dict[str, Any]]] = {}
    for tp in asked:
        v = committed.get(tp)
        topics.setdefault(tp[0], []).append(
            {
                "partition_index": tp[1],
                "committed_offset": -1 if v is None else v.offset,
                "committed_leader_epoch": -1 if v is None else v.leader_epoch,
                "metadata": "" if v is None else v.metadata,
                "error_code": int(error),
            }
        )
    return [{"name": name, "partitions": ps} for name, ps in topics.items()]


async def handle(ctx: RequestContext, req: Any) -> ResponseBody | None:
    if ctx.version < 8:
        error, topics = _group(ctx, str(req.group_id), req.topics)
        body: dict[str, Any] = {"throttle_time": 0, "topics": topics, "error_code": int(error)}
    else:
        groups = []
        for g in req.groups:
            error, topics = _group(ctx, str(g.group_id), g.topics)
            groups.append({"group_id": str(g.group_id), "topics": topics, "error_code": int(error)})
        body = {"throttle_time": 0, "groups": groups}
    return kio_codec.encode_response(9, ctx.version, body)


HANDLER = ApiHandler(key=9, min_version=1, max_version=9, handle=handle)
