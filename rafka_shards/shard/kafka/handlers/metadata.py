"""Metadata (API key 3), versions 0-12: brokers, cluster id, controller, topics and partition leadership.

Runs in a shard process; answered from the metadata image, so any shard can answer for the whole cluster. Unknown
topics are created when both the broker (``auto_create_topics``, Kafka's auto.create.topics.enable) and, from v4, the
request allow it. v10+ can name topics by id (KIP-516).

Authorization (Kafka's): a request for every topic lists only those the principal may DESCRIBE (the others are left
out silently); a named topic it may not describe is TOPIC_AUTHORIZATION_FAILED whether or not it exists (by id, with
no name), and creating a missing one also needs CREATE on the cluster or on the topic.
"""

from __future__ import annotations

from typing import Any

from controller.acls import AUTHORIZED_OPERATIONS_OMITTED, CLUSTER_RESOURCE_NAME, AclOperation, ResourceType
from controller.image import TopicImage
from rafka_shards.model import INTERNAL_TOPICS, ErrorCode, KafkaError, topic_name_error
from rafka_shards.protocol.fast_responses import (
    MetadataBroker,
    MetadataPartition,
    MetadataTopic,
    encode_metadata_response,
)
from rafka_shards.shard.kafka.api import ApiHandler, RequestContext, ResponseBody

_NO_TOPIC_ID = bytes(16)


def topic_metadata(topic: TopicImage) -> MetadataTopic:
    partitions = [
        MetadataPartition(
            int(ErrorCode.LEADER_NOT_AVAILABLE) if p.leader < 0 else 0,
            p.partition,
            p.leader,
            p.leader_epoch,
            p.replicas,
            p.isr,
            (),
        )
        for p in topic.partitions
    ]
    return MetadataTopic(0, topic.name, topic.topic_id.bytes, topic.name in INTERNAL_TOPICS, partitions)


def _error_topic(code: ErrorCode, name: str | None, topic_id: bytes = _NO_TOPIC_ID) -> MetadataTopic:
    return MetadataTopic(int(code), name, topic_id, False, [])


async def handle(ctx: RequestContext, req: Any) -> ResponseBody | None:
    manager = ctx.manager
    version = ctx.version
    requested = req.topics
    allow_auto = ctx.config.auto_create_topics and bool(getattr(req, "allow_auto_topic_creation", True))
    topics: list[MetadataTopic] = []
    access = ctx.access
    if requested is None or (version == 0 and not requested):
        topics = [
            topic_metadata(t)
            for t in manager.image.topics.values()
            if access.allows(AclOperation.DESCRIBE, ResourceType.TOPIC, t.name, audit=False)
        ]
    else:
        for rt in requested:
            name = getattr(rt, "name", None)
            if name is None:
                topic_id = getattr(rt, "topic_id", None)
                found = manager.image.topics_by_id.get(topic_id) if topic_id is not None else None
                raw = topic_id.bytes if topic_id is not None else _NO_TOPIC_ID
                if found is None:
                    topics.append(_error_topic(ErrorCode.UNKNOWN_TOPIC_ID, None, raw))
                    continue
                if not access.topic(AclOperation.DESCRIBE, found):
                    topics.append(_error_topic(ErrorCode.TOPIC_AUTHORIZATION_FAILED, None, raw))
                    continue
                name = found
            name = str(name)
            if topic_name_error(name) is not None:
                topics.append(_error_topic(ErrorCode.INVALID_TOPIC_EXCEPTION, name))
                continue
            if not access.topic(AclOperation.DESCRIBE, name):
                topics.append(_error_topic(ErrorCode.TOPIC_AUTHORIZATION_FAILED, name))
                continue
            topic = manager.image.topics.get(name)
            if topic is None and allow_auto:
                if not (access.cluster(AclOperation.CREATE) or access.topic(AclOperation.CREATE, name)):
                    topics.append(_error_topic(ErrorCode.TOPIC_AUTHORIZATION_FAILED, name))
                    continue
                try:
                    topic = await manager.auto_create(name)
                except KafkaError as e:
                    topics.append(_error_topic(e.code, name))
                    continue
            if topic is None:
                topics.append(_error_topic(ErrorCode.UNKNOWN_TOPIC_OR_PARTITION, name))
                continue
            topics.append(topic_metadata(topic))
    image = manager.image
    # Like KRaft, only unfenced brokers are listed: a fenced one leads nothing and clients should not connect to it.
    # Each by its address on the listener the request came in on; brokers without that listener are left out.
    brokers = [
        MetadataBroker(b.broker_id, ep[0], ep[1], b.rack)
        for b in image.brokers.values()
        if not b.fenced and (ep := b.endpoint(ctx.listener)) is not None
    ]
    # Authorized operations (v8+ topics, v8-v10 cluster), when asked: the bit fields of what the principal may do.
    if getattr(req, "include_topic_authorized_operations", False):
        topics = [
            t._replace(topic_authorized_operations=access.authorized_operations(ResourceType.TOPIC, t.name))
            if t.error_code == 0 and t.name is not None
            else t
            for t in topics
        ]
    cluster_operations = AUTHORIZED_OPERATIONS_OMITTED
    if getattr(req, "include_cluster_authorized_operations", False):
        cluster_operations = access.authorized_operations(ResourceType.CLUSTER, CLUSTER_RESOURCE_NAME)
    # A quorum of one: this node is the controller (with Raft, the image will name the elected one).
    return encode_metadata_response(
        version,
        brokers,
        image.cluster_id,
        ctx.manager.broker_id,
        topics,
        cluster_authorized_operations=cluster_operations,
    )


HANDLER = ApiHandler(key=3, min_version=0, max_version=12, handle=handle)
