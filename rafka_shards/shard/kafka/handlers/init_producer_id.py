"""InitProducerId (API key 22), versions 0-4: producer ids for idempotent producers (KIP-98, KIP-360).

Runs in a shard process. Idempotent producers only: a transactional id gets TRANSACTIONAL_ID_AUTHORIZATION_FAILED
(this broker has no transaction coordinator). KIP-360 (v3+): a producer that sends its current id and epoch gets
the epoch bumped, which resets its sequence numbers on every partition.
"""

from __future__ import annotations

from typing import Any

from controller.acls import AclOperation, ResourceType
from rafka_shards.model import ErrorCode
from rafka_shards.protocol import kio_codec
from rafka_shards.shard.kafka.api import ApiHandler, RequestContext, ResponseBody

EPOCH_MAX = 32767


async def handle(ctx: RequestContext, req: Any) -> ResponseBody | None:
    body: dict[str, Any] = {"throttle_time": 0, "error_code": 0, "producer_id": -1, "producer_epoch": -1}
    access = ctx.access
    if req.transactional_id is not None:
        body["error_code"] = int(ErrorCode.TRANSACTIONAL_ID_AUTHORIZATION_FAILED)
    elif not (
        access.allows_cluster_quietly(AclOperation.IDEMPOTENT_WRITE)
        or access.allows_any(AclOperation.WRITE, ResourceType.TOPIC)
    ):  # KIP-679: IDEMPOTENT_WRITE on the cluster, or WRITE on any topic
        access.cluster(AclOperation.IDEMPOTENT_WRITE)  # audited as the denial of the cluster operation
        body["error_code"] = int(ErrorCode.CLUSTER_AUTHORIZATION_FAILED)
    else:
        pid = int(getattr(req, "producer_id", -1))
        epoch = int(getattr(req, "producer_epoch", -1))
        if pid >= 0 and 0 <= epoch < EPOCH_MAX:
            body.update(producer_id=pid, producer_epoch=epoch + 1)
        else:
            body.update(producer_id=await ctx.manager.allocate_producer_id(), producer_epoch=0)
    return kio_codec.encode_response(22, ctx.version, body)


HANDLER = ApiHandler(key=22, min_version=0, max_version=4, handle=handle)
