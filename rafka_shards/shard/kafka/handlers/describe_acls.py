"""DescribeAcls (API key 29), versions 1-3: the stored ACLs one filter selects, grouped by resource pattern.

Runs in a shard process, from its metadata image. Needs DESCRIBE on the cluster (else CLUSTER_AUTHORIZATION_FAILED);
a filter with an UNKNOWN part is INVALID_REQUEST with Kafka's reason (``controller.acls.validate_filter``). Works
whether or not enforcement is on (see ``create_acls``).
"""

from __future__ import annotations

from typing import Any

from controller.acls import AclOperation, validate_filter
from rafka_shards.model import ErrorCode
from rafka_shards.protocol import kio_codec
from rafka_shards.shard.authz import AUTHORIZATION_FAILED_MESSAGE
from rafka_shards.shard.kafka.api import ApiHandler, RequestContext, ResponseBody
from rafka_shards.shard.kafka.handlers.acl_requests import filter_of, resources


def _answer(ctx: RequestContext, code: ErrorCode | int, message: str | None, found: list[Any]) -> ResponseBody:
    body = {"throttle_time": 0, "error_code": int(code), "error_message": message, "resources": found}
    return kio_codec.encode_response(29, ctx.version, body)


async def handle(ctx: RequestContext, req: Any) -> ResponseBody | None:
    if not ctx.access.cluster(AclOperation.DESCRIBE):
        return _answer(ctx, ErrorCode.CLUSTER_AUTHORIZATION_FAILED, AUTHORIZATION_FAILED_MESSAGE, [])
    acl_filter = filter_of(req)
    problem = validate_filter(acl_filter, api_version=ctx.version)
    if problem is not None:
        return _answer(ctx, problem.error, problem.message, [])
    return _answer(ctx, ErrorCode.NONE, None, resources(ctx.manager.image.acls.acls(acl_filter)))


HANDLER = ApiHandler(key=29, min_version=1, max_version=3, handle=handle)
