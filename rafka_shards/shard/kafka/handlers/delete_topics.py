"""DeleteTopics (API key 20), versions 1-6: delete topics by name (or by id from v6, KIP-516) and their data.

Runs in a shard process. The deletion is a command in the metadata log; each shard that led a partition of the topic
closes and removes its directory when it applies the new image.
"""

from __future__ import annotations

import uuid
from typing import Any

from controller.acls import AclOperation
from rafka_shards.model import ErrorCode, KafkaError, topic_name_error
from rafka_shards.protocol import kio_codec
from rafka_shards.shard.kafka.api import ApiHandler, RequestContext, ResponseBody


async def handle(ctx: RequestContext, req: Any) -> ResponseBody | None:
    manager = ctx.manager
    if ctx.version >= 6:
        targets: list[tuple[str | None, uuid.UUID | None]] = [(t.name, t.topic_id) for t in req.topics]
    else:
        targets = [(str(name), None) for name in req.topic_names]
    results = []
    for name, topic_id in targets:
        entry: dict[str, Any] = {"name": name, "topic_id": topic_id, "error_code": 0, "error_message": None}
        try:
            if name is None:
                name = manager.image.topics_by_id.get(topic_id) if topic_id is not None else None
                if name is None:
                    raise KafkaError(ErrorCode.UNKNOWN_TOPIC_ID, f"no topic has id {topic_id}")
                # Kafka: by id, DESCRIBE on the topic first, and a principal without it is not told the name.
                ctx.access.require_topic(AclOperation.DESCRIBE, name)
                entry["name"] = name
            err = topic_name_error(name)
            if err is not None:
                raise KafkaError(ErrorCode.INVALID_TOPIC_EXCEPTION, err)
            ctx.access.require_topic(AclOperation.DELETE, name)  # whether or not it exists, as in Kafka
            topic = manager.image.topics.get(name)
            if topic is None:
                raise KafkaError(ErrorCode.UNKNOWN_TOPIC_OR_PARTITION, f"topic {name!r} does not exist")
            if topic_id is not None and topic.topic_id != topic_id:
                raise KafkaError(ErrorCode.UNKNOWN_TOPIC_ID, f"topic {name!r} does not have id {topic_id}")
            entry["topic_id"] = topic.topic_id
            await manager.delete_topic(name)
        except KafkaError as e:
            entry.update(error_code=int(e.code), error_message=e.message)
        results.append(entry)
    return kio_codec.encode_response(20, ctx.version, {"throttle_time": 0, "responses": results})


HANDLER = ApiHandler(key=20, min_version=1, max_version=6, handle=handle)
