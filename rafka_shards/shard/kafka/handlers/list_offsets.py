"""ListOffsets (API key 2), versions 1-8: earliest, latest, max timestamp and by-time offset lookups.

Runs in a shard process, on the partition's leader. Special timestamps (KIP-79, KIP-734): -2 earliest, -1 latest
(the high watermark, which is also the last stable offset since there are no transactions), -3 the record with the
largest timestamp (v7+), -4 earliest local (v8+, the same as earliest: there is no tiered storage). Otherwise the
first offset whose record timestamp is >= the target, or -1 when there is none below the high watermark.
"""

from __future__ import annotations

from typing import Any

from controller.acls import AclOperation
from rafka_shards.model import ErrorCode, KafkaError
from rafka_shards.protocol import kio_codec
from rafka_shards.shard.authz import AUTHORIZATION_FAILED_MESSAGE
from rafka_shards.shard.kafka.api import ApiHandler, RequestContext, ResponseBody
from rafka_shards.shard.partition import Partition

LATEST = -1
EARLIEST = -2
MAX_TIMESTAMP = -3
EARLIEST_LOCAL = -4


def _lookup(p: Partition, timestamp: int, version: int) -> tuple[int, int]:
    """(offset, timestamp) for one request partition."""
    log = p.log
    hw = log.high_watermark
    if timestamp == EARLIEST or (timestamp == EARLIEST_LOCAL and version >= 8):
        return log.log_start_offset, -1
    if timestamp == LATEST:
        return hw, -1
    if timestamp == MAX_TIMESTAMP and version >= 7:
        found = log.max_timestamp_offset()
    elif timestamp >= 0:
        found = log.offset_for_timestamp(timestamp)
    else:
        raise KafkaError(ErrorCode.INVALID_REQUEST, f"timestamp {timestamp} is not supported at version {version}")
    if found is None or found[0] >= hw:
        return -1, -1
    return found


async def handle(ctx: RequestContext, req: Any) -> ResponseBody | None:
    manager = ctx.manager
    topics = []
    for topic in req.topics:
        name = str(topic.name)
        authorized = ctx.access.topic(AclOperation.DESCRIBE, name)  # Kafka: DESCRIBE on each topic
        parts = []
        for rp in topic.partitions:
            index = int(rp.partition_index)
            entry: dict[str, Any] = {"partition_index": index}
            try:
                if not authorized:
                    raise KafkaError(ErrorCode.TOPIC_AUTHORIZATION_FAILED, AUTHORIZATION_FAILED_MESSAGE)
                p = manager.lookup(name, index)
                p.check_leader_epoch(int(getattr(rp, "current_leader_epoch", -1)))
                offset, ts = _lookup(p, int(rp.timestamp), ctx.version)
                entry.update(error_code=0, offset=offset, timestamp=ts, leader_epoch=p.leader_epoch)
            except KafkaError as e:
                entry.update(error_code=int(e.code), offset=-1, timestamp=-1, leader_epoch=-1)
            parts.append(entry)
        topics.append({"name": name, "partitions": parts})
    return kio_codec.encode_response(2, ctx.version, {"throttle_time": 0, "topics": topics})


HANDLER = ApiHandler(key=2, min_version=1, max_version=8, handle=handle)
