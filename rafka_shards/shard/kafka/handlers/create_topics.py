"""CreateTopics (API key 19), versions 2-7: create topics with partitions, replication factor and configs.

Runs in a shard process. A topic becomes a CreateTopic command in the metadata log, made by the topics frontend
(``controller.topics``, which the admin API uses too) with its replicas placed there, and validated before it is
proposed, so a bad name, count or config never enters it; the shards that lead its partitions create their
directories when they apply the new image. -1 partitions or replication factor means the broker default (KIP-464,
v4+). v5+ returns the resulting configs (KIP-525), v7 the topic id (KIP-516).

Authorization (Kafka's): CREATE on the cluster or on the topic, else TOPIC_AUTHORIZATION_FAILED ("Authorization
failed."); the configs are returned only with DESCRIBE_CONFIGS on the topic (else topic_config_error_code says so).
"""

from __future__ import annotations

from typing import Any

from controller.acls import AclOperation
from rafka_shards.model import ErrorCode, KafkaError
from rafka_shards.protocol import kio_codec
from rafka_shards.shard.authz import AUTHORIZATION_FAILED_MESSAGE
from rafka_shards.shard.kafka.api import ApiHandler, RequestContext, ResponseBody
from rafka_shards.shard.kafka.configs import describe_topic_configs


async def handle(ctx: RequestContext, req: Any) -> ResponseBody | None:
    manager = ctx.manager
    access = ctx.access
    may_create_any = access.allows_cluster_quietly(AclOperation.CREATE)
    results = []
    seen: set[str] = set()
    for t in req.topics:
        name = str(t.name)
        entry: dict[str, Any] = {
            "name": name,
            "topic_id": None,
            "error_code": 0,
            "error_message": None,
            "num_partitions": -1,
            "replication_factor": -1,
            "configs": [],
        }
        try:
            if name in seen:
                raise KafkaError(ErrorCode.INVALID_REQUEST, f"topic {name!r} appears twice in the request")
            seen.add(name)
            if not may_create_any and not access.topic(AclOperation.CREATE, name):
                raise KafkaError(ErrorCode.TOPIC_AUTHORIZATION_FAILED, AUTHORIZATION_FAILED_MESSAGE)
            configs: dict[str, str] = {}
            for c in t.configs:
                if c.value is None:
                    raise KafkaError(ErrorCode.INVALID_CONFIG, f"config {c.name!r} has a null value")
                configs[str(c.name)] = str(c.value)
            assignments = None
            if t.assignments:
                if int(t.num_partitions) != -1 or int(t.replication_factor) != -1:
                    raise KafkaError(
                        ErrorCode.INVALID_REQUEST,
                        "give either assignments or num_partitions/replication_factor, not both",
                    )
                by_index = {int(a.partition_index): tuple(int(b) for b in a.broker_ids) for a in t.assignments}
                if sorted(by_index) != list(range(len(by_index))):
                    raise KafkaError(
                        ErrorCode.INVALID_REPLICA_ASSIGNMENT, "assignments must cover partitions 0..n-1 exactly once"
                    )
                assignments = tuple(by_index[i] for i in range(len(by_index)))
            partitions = int(t.num_partitions)
            if partitions == -1:
                partitions = ctx.config.default_partitions
            rf = int(t.replication_factor)
            if rf == -1:
                rf = ctx.config.default_replication_factor
            topic = await manager.create_topic(
                name, partitions, rf, configs, assignments, validate_only=bool(req.validate_only)
            )
            if assignments is not None:
                partitions, rf = len(assignments), len(assignments[0]) if assignments else 0
            entry["topic_id"] = topic.topic_id if topic is not None else None
            if not access.topic(AclOperation.DESCRIBE_CONFIGS, name):
                entry["topic_config_error_code"] = int(ErrorCode.TOPIC_AUTHORIZATION_FAILED)
            else:
                entry.update(
                    num_partitions=partitions,
                    replication_factor=rf,
                    configs=[
                        {
                            "name": c["name"],
                            "value": c["value"],
                            "read_only": c["read_only"],
                            "config_source": c["config_source"],
                            "is_sensitive": c["is_sensitive"],
                        }
                        for c in describe_topic_configs(ctx.config, configs, None, with_documentation=False)
                    ],
                )
        except KafkaError as e:
            entry.update(error_code=int(e.code), error_message=e.message)
        results.append(entry)
    return kio_codec.encode_response(19, ctx.version, {"throttle_time": 0, "topics": results})


HANDLER = ApiHandler(key=19, min_version=2, max_version=7, handle=handle)
