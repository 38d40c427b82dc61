"""DeleteAcls (API key 31), versions 1-3: remove the stored ACLs each filter selects.

Runs in a shard process. Needs ALTER on the cluster (else CLUSTER_AUTHORIZATION_FAILED on every filter). Each
filter is checked on its own (``controller.acls.validate_filter``); the ACLs the valid filters match on this shard's
image are removed with one ``DeleteAcls`` command, and each filter's result lists what it matched. An ACL another
request deleted meanwhile is skipped by the command; one created meanwhile is not deleted (as when it comes after).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from controller.acls import ACL_CHANGES_PER_REQUEST_MAX, AclBinding, AclOperation, validate_filter
from controller.commands import DeleteAcls
from rafka_shards.model import ErrorCode, KafkaError
from rafka_shards.protocol import kio_codec
from rafka_shards.shard.authz import AUTHORIZATION_FAILED_MESSAGE
from rafka_shards.shard.kafka.api import ApiHandler, RequestContext, ResponseBody
from rafka_shards.shard.kafka.handlers.acl_requests import binding_fields, filter_of


def _result(code: ErrorCode | int, message: str | None, matched: Sequence[AclBinding] = ()) -> dict[str, Any]:
    return {
        "error_code": int(code),
        "error_message": message,
        "matching_acls": [{"error_code": 0, "error_message": None, **binding_fields(b)} for b in matched],
    }


async def handle(ctx: RequestContext, req: Any) -> ResponseBody | None:
    filters = list(req.filters)
    if not ctx.access.cluster(AclOperation.ALTER):
        denied = _result(ErrorCode.CLUSTER_AUTHORIZATION_FAILED, AUTHORIZATION_FAILED_MESSAGE)
        return kio_codec.encode_response(
            31, ctx.version, {"throttle_time": 0, "filter_results": [denied] * len(filters)}
        )
    acls = ctx.manager.image.acls
    results: list[dict[str, Any]] = []
    matched: list[list[AclBinding] | None] = []
    removing: dict[AclBinding, None] = {}
    for f in filters:
        acl_filter = filter_of(f)
        problem = validate_filter(acl_filter, api_version=ctx.version)
        if problem is not None:
            results.append(_result(problem.error, problem.message))
            matched.append(None)
            continue
        found = list(acls.acls(acl_filter))
        removing.update(dict.fromkeys(found))
        results.append(_result(ErrorCode.NONE, None, found))
        matched.append(found)
    if len(removing) > ACL_CHANGES_PER_REQUEST_MAX:
        message = f"the filters match {len(removing)} ACLs, more than {ACL_CHANGES_PER_REQUEST_MAX} in one request"
        results = [
            r if m is None else _result(ErrorCode.INVALID_REQUEST, message)
            for r, m in zip(results, matched, strict=True)
        ]
    elif removing:
        try:
            await ctx.manager.propose(DeleteAcls(tuple(removing)))
        except KafkaError as e:
            results = [r if m is None else _result(e.code, e.message) for r, m in zip(results, matched, strict=True)]
    return kio_codec.encode_response(31, ctx.version, {"throttle_time": 0, "filter_results": results})


HANDLER = ApiHandler(key=31, min_version=1, max_version=3, handle=handle)
