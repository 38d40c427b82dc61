"""DescribeCluster (API key 60), versions 0-1: cluster id, controller and brokers (KIP-700).

Runs in a shard process; answered from the metadata image.
"""

from __future__ import annotations

from typing import Any

from controller.acls import AUTHORIZED_OPERATIONS_OMITTED, CLUSTER_RESOURCE_NAME, AclOperation, ResourceType
from rafka_shards.model import ErrorCode
from rafka_shards.protocol import kio_codec
from rafka_shards.shard.kafka.api import ApiHandler, RequestContext, ResponseBody

BROKERS_ENDPOINT = 1  # endpoint_type (v1+): 1 = brokers, 2 = controllers


async def handle(ctx: RequestContext, req: Any) -> ResponseBody | None:
    image = ctx.manager.image
    endpoint_type = int(getattr(req, "endpoint_type", BROKERS_ENDPOINT))
    if endpoint_type != BROKERS_ENDPOINT:
        return kio_codec.encode_response(
            60,
            ctx.version,
            {
                "throttle_time": 0,
                "error_code": int(ErrorCode.UNSUPPORTED_ENDPOINT_TYPE),
                "error_message": f"endpoint type {endpoint_type} is not served; use 1 (brokers)",
                "endpoint_type": endpoint_type,
                "cluster_id": image.cluster_id,
                "controller_id": -1,
                "brokers": [],
            },
        )
    brokers = [
        {"broker_id": b.broker_id, "host": ep[0], "port": ep[1], "rack": b.rack}
        for b in sorted(image.brokers.values(), key=lambda b: b.broker_id)
        # As in Metadata: fenced brokers are not listed, the others by their address on the request's listener.
        if not b.fenced and (ep := b.endpoint(ctx.listener)) is not None
    ]
    # Kafka: DESCRIBE on the cluster only decides whether the authorized operations are given (0 when denied).
    operations = AUTHORIZED_OPERATIONS_OMITTED
    if req.include_cluster_authorized_operations:
        access = ctx.access
        if access.cluster(AclOperation.DESCRIBE):
            operations = access.authorized_operations(ResourceType.CLUSTER, CLUSTER_RESOURCE_NAME)
        else:
            operations = 0
    return kio_codec.encode_response(
        60,
        ctx.version,
        {
            "throttle_time": 0,
            "error_code": 0,
            "error_message": None,
            "endpoint_type": endpoint_type,
            "cluster_id": image.cluster_id,
            "controller_id": ctx.manager.broker_id,
            "brokers": brokers,
            "cluster_authorized_operations": operations,
        },
    )


HANDLER = ApiHandler(key=60, min_version=0, max_version=1, handle=handle)
