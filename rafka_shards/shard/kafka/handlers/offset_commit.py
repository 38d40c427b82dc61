"""OffsetCommit (API key 8), versions 2-9: a group's committed offsets, written to ``__consumer_offsets``.

Runs in a shard process. Every partition is checked (it must exist; its metadata string is bounded by
``offset_metadata_max_bytes``), then the commit is validated against the group (generation, member, static
instance) and written as one batch with acks=all: the answer comes once every in-sync replica has it, fsynced. A
simple consumer (generation -1, no member id) may commit to an empty group. v6+ carries the leader epoch of the
committed offset; v7+ the ``group.instance.id``; v2-v4's retention time is ignored (KIP-211).
"""

from __future__ import annotations

from typing import Any

from controller.acls import AclOperation
from rafka_shards.groups.offsets_records import OffsetValue
from rafka_shards.model import ErrorCode, KafkaError
from rafka_shards.protocol import kio_codec
from rafka_shards.shard.kafka.api import ApiHandler, RequestContext, ResponseBody


def _partition_error(ctx: RequestContext, topic: str, partition: int, metadata: str | None) -> ErrorCode | None:
    t = ctx.manager.image.topics.get(topic)
    if t is None or not 0 <= partition < len(t.partitions):
        return ErrorCode.UNKNOWN_TOPIC_OR_PARTITION
    if metadata is not None and len(metadata.encode()) > ctx.config.offset_metadata_max_bytes:
        return ErrorCode.OFFSET_METADATA_TOO_LARGE
    return None


async def handle(ctx: RequestContext, req: Any) -> ResponseBody | None:
    group_id = str(req.group_id)
    now = ctx.manager.now_ms()
    errors: dict[tuple[str, int], ErrorCode] = {}
    offsets: dict[tuple[str, int], OffsetValue] = {}
    # READ on the group (every partition gets its error), then READ on each topic.
    group_denied = bool(group_id) and not ctx.access.group(AclOperation.READ, group_id)
    for topic in req.topics:
        topic_denied = not group_denied and not ctx.access.topic(AclOperation.READ, str(topic.name))
        for p in topic.partitions:
            tp = (str(topic.name), int(p.partition_index))
            if group_denied or topic_denied:
                denied = ErrorCode.GROUP_AUTHORIZATION_FAILED if group_denied else ErrorCode.TOPIC_AUTHORIZATION_FAILED
                errors[tp] = denied
                continue
            error = _partition_error(ctx, tp[0], tp[1], p.committed_metadata)
            if error is not None:
                errors[tp] = error
                continue
            epoch = int(getattr(p, "committed_leader_epoch", -1))
            offsets[tp] = OffsetValue(int(p.committed_offset), epoch, p.committed_metadata or "", now)
            errors[tp] = ErrorCode.NONE
    if not group_id:
        group_error = ErrorCode.INVALID_GROUP_ID
    elif group_denied:
        group_error = ErrorCode.GROUP_AUTHORIZATION_FAILED
    else:
        try:
            group_error = await ctx.groups.commit(
                group_id,
                str(req.member_id),
                getattr(req, "group_instance_id", None),
                int(req.generation_id_or_member_epoch),
                offsets,
            )
        except KafkaError as e:
            group_error = e.code
    for tp in offsets:
        errors[tp] = group_error
    topics: dict[str, list[dict[str, int]]] = {}
    for (name, index), error in errors.items():
        topics.setdefault(name, []).append({"partition_index": index, "error_code": int(error)})
    body = {"throttle_time": 0, "topics": [{"name": n, "partitions": ps} for n, ps in topics.items()]}
    return kio_codec.encode_response(8, ctx.version, body)


HANDLER = ApiHandler(key=8, min_version=2, max_version=9, handle=handle)
