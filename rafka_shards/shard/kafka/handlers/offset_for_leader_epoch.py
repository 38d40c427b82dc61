"""OffsetForLeaderEpoch (API key 23), versions 2-4: the end offset of a leader epoch (KIP-101, KIP-279).

Runs in a shard process, on the partition's leader. Clients (librdkafka, KIP-320) use it after a leader change to
detect log truncation; followers (``broker.replication``) use it to find where their log diverged from the leader's.
"""

from __future__ import annotations

from typing import Any

from controller.acls import AclOperation
from rafka_shards.model import ErrorCode, KafkaError
from rafka_shards.protocol import kio_codec
from rafka_shards.shard.authz import AUTHORIZATION_FAILED_MESSAGE
from rafka_shards.shard.kafka.api import ApiHandler, RequestContext, ResponseBody


async def handle(ctx: RequestContext, req: Any) -> ResponseBody | None:
    manager = ctx.manager
    replica = int(getattr(req, "replica_id", -1))
    # A follower (replica_id >= 0) must be a registered, unfenced broker; this API carries no broker epoch.
    refusal = manager.replica_refusal(replica, -1) if replica >= 0 else None
    # Kafka: CLUSTER_ACTION on the cluster (followers), else DESCRIBE on each topic (consumers, KIP-320). A claimed
    # replica that may not act as one is refused like Fetch refuses it.
    access = ctx.access
    as_broker = access.replica_fetch() if replica >= 0 else access.allows_cluster_quietly(AclOperation.CLUSTER_ACTION)
    topics = []
    for topic in req.topics:
        name = str(topic.topic)
        authorized = as_broker or (replica < 0 and access.topic(AclOperation.DESCRIBE, name))
        parts = []
        for rp in topic.partitions:
            index = int(rp.partition)
            try:
                if not authorized:
                    raise KafkaError(ErrorCode.TOPIC_AUTHORIZATION_FAILED, AUTHORIZATION_FAILED_MESSAGE)
                if refusal is not None:
                    raise refusal
                p = manager.lookup(name, index)
                if replica >= 0 and replica not in p.replicas:
                    raise KafkaError(ErrorCode.NOT_LEADER_OR_FOLLOWER, f"broker {replica} is not a replica of {name}")
                p.check_leader_epoch(int(getattr(rp, "current_leader_epoch", -1)))
                epoch, end = p.log.end_offset_for_epoch(int(rp.leader_epoch))
                parts.append({"error_code": 0, "partition": index, "leader_epoch": epoch, "end_offset": end})
            except KafkaError as e:
                parts.append({"error_code": int(e.code), "partition": index, "leader_epoch": -1, "end_offset": -1})
        topics.append({"topic": name, "partitions": parts})
    return kio_codec.encode_response(23, ctx.version, {"throttle_time": 0, "topics": topics})


HANDLER = ApiHandler(key=23, min_version=2, max_version=4, handle=handle)
