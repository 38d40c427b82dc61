"""FindCoordinator (API key 10), versions 0-6: which broker coordinates a group.

Runs in a shard process. A group's coordinator is the leader of partition ``partition_for(group)`` of
``__consumer_offsets`` (created here on first use, as Kafka does). v4+ asks for several keys at once (KIP-699).
Key type 1 (transactions) gets COORDINATOR_NOT_AVAILABLE: this broker has no transaction coordinator.
"""

from __future__ import annotations

from typing import Any

from controller.acls import AclOperation
from rafka_shards.model import OFFSETS_TOPIC, ErrorCode, KafkaError
from rafka_shards.protocol import kio_codec
from rafka_shards.shard.kafka.api import ApiHandler, RequestContext, ResponseBody

KEY_TYPE_GROUP = 0
KEY_TYPE_TRANSACTION = 1
KEYS_PER_REQUEST_MAX = 10_000


async def _coordinator(ctx: RequestContext, key_type: int, key: str) -> dict[str, Any]:
    found: dict[str, Any] = {"key": key, "node_id": -1, "host": "", "port": -1, "error_message": None}
    try:
        if key_type == KEY_TYPE_TRANSACTION:
            raise KafkaError(ErrorCode.COORDINATOR_NOT_AVAILABLE, "this broker has no transaction coordinator")
        if key_type != KEY_TYPE_GROUP:
            raise KafkaError(ErrorCode.INVALID_REQUEST, f"unknown coordinator key type {key_type}")
        if not key:
            raise KafkaError(ErrorCode.INVALID_REQUEST, "the group id is empty")
        ctx.access.require_group(AclOperation.DESCRIBE, key)  # DESCRIBE on each group
        await ctx.groups.ensure_offsets_topic()
        n = ctx.groups.coordinator_partition(key)
        image = ctx.manager.image
        if n is None:
            raise KafkaError(ErrorCode.COORDINATOR_NOT_AVAILABLE, f"{OFFSETS_TOPIC} does not exist yet")
        leader = image.topics[OFFSETS_TOPIC].partitions[n].leader
        broker = image.brokers.get(leader)
        if broker is None or broker.fenced:
            raise KafkaError(ErrorCode.COORDINATOR_NOT_AVAILABLE, f"{OFFSETS_TOPIC}-{n} has no leader")
        ep = broker.endpoint(ctx.listener)
        if ep is None:
            raise KafkaError(
                ErrorCode.COORDINATOR_NOT_AVAILABLE, f"broker {broker.broker_id} has no listener {ctx.listener}"
            )
        found.update(node_id=broker.broker_id, host=ep[0], port=ep[1], error_code=0)
    except KafkaError as e:
        code = e.code
        if code not in (
            ErrorCode.INVALID_REQUEST,
            ErrorCode.COORDINATOR_NOT_AVAILABLE,
            ErrorCode.GROUP_AUTHORIZATION_FAILED,
        ):
            code = ErrorCode.COORDINATOR_NOT_AVAILABLE  # the offsets topic could not be created: retriable
        found.update(error_code=int(code), error_message=e.message)
    return found


async def handle(ctx: RequestContext, req: Any) -> ResponseBody | None:
    key_type = int(getattr(req, "key_type", KEY_TYPE_GROUP))
    if ctx.version < 4:
        found = await _coordinator(ctx, key_type, str(req.key))
        return kio_codec.encode_response(10, ctx.version, {"throttle_time": 0, **found})
    keys = list(req.coordinator_keys)[:KEYS_PER_REQUEST_MAX]
    coordinators = [await _coordinator(ctx, key_type, str(k)) for k in keys]
    return kio_codec.encode_response(10, ctx.version, {"throttle_time": 0, "coordinators": coordinators})


HANDLER = ApiHandler(key=10, min_version=0, max_version=6, handle=handle)
