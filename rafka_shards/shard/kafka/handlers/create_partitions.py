"""CreatePartitions (API key 37), versions 0-3: grow a topic's partition count (KIP-195).

Runs in a shard process. New partitions are placed by the topics frontend (``controller.topics``, with the
controller's placement rule) unless the request assigns replicas itself; validate_only checks without changing
anything.
"""

from __future__ import annotations

from typing import Any

from controller.acls import AclOperation
from rafka_shards.model import KafkaError
from rafka_shards.protocol import kio_codec
from rafka_shards.shard.kafka.api import ApiHandler, RequestContext, ResponseBody


async def handle(ctx: RequestContext, req: Any) -> ResponseBody | None:
    results = []
    for t in req.topics:
        name = str(t.name)
        entry: dict[str, Any] = {"name": name, "error_code": 0, "error_message": None}
        assignments = None
        if t.assignments is not None:
            assignments = tuple(tuple(int(b) for b in a.broker_ids) for a in t.assignments)
        try:
            ctx.access.require_topic(AclOperation.ALTER, name)  # Kafka: ALTER on each topic
            await ctx.manager.create_partitions(name, int(t.count), assignments, validate_only=bool(req.validate_only))
        except KafkaError as e:
            entry.update(error_code=int(e.code), error_message=e.message)
        results.append(entry)
    return kio_codec.encode_response(37, ctx.version, {"throttle_time": 0, "results": results})


HANDLER = ApiHandler(key=37, min_version=0, max_version=3, handle=handle)
