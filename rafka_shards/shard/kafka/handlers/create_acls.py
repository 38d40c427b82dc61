"""CreateAcls (API key 30), versions 1-3: store ACLs in the metadata log (KIP-140, prefixed patterns KIP-290).

Runs in a shard process. Needs ALTER on the cluster (else CLUSTER_AUTHORIZATION_FAILED on every creation). Each
creation is checked on its own (``controller.acls.validate_binding``: Kafka's checks and messages, INVALID_REQUEST);
the valid ones are proposed together as one ``CreateAcls`` command, so they are stored all or none, and every shard
enforces them once it applied that entry. An ACL already stored is kept once (no error, as in Kafka).

ACLs can be created and listed whether or not ``authorization_enabled`` is on (as in Redpanda): set them up, then turn
enforcement on. Kafka without an authorizer answers SECURITY_DISABLED instead.
"""

from __future__ import annotations

from typing import Any

from controller.acls import ACL_CHANGES_PER_REQUEST_MAX, AclBinding, AclOperation, validate_binding
from controller.commands import CreateAcls
from rafka_shards.model import ErrorCode, KafkaError
from rafka_shards.protocol import kio_codec
from rafka_shards.shard.authz import AUTHORIZATION_FAILED_MESSAGE
from rafka_shards.shard.kafka.api import ApiHandler, RequestContext, ResponseBody
from rafka_shards.shard.kafka.handlers.acl_requests import binding_of


def _result(code: ErrorCode | int, message: str | None) -> dict[str, Any]:
    return {"error_code": int(code), "error_message": message}


async def handle(ctx: RequestContext, req: Any) -> ResponseBody | None:
    creations = list(req.creations)
    if not ctx.access.cluster(AclOperation.ALTER):
        denied = _result(ErrorCode.CLUSTER_AUTHORIZATION_FAILED, AUTHORIZATION_FAILED_MESSAGE)
        return kio_codec.encode_response(30, ctx.version, {"throttle_time": 0, "results": [denied] * len(creations)})
    results: list[dict[str, Any] | None] = []
    valid: list[tuple[int, AclBinding]] = []
    for creation in creations:
        binding = binding_of(creation)
        problem = validate_binding(binding, api_version=ctx.version)
        if problem is not None:
            results.append(_result(problem.error, problem.message))
        elif len(valid) >= ACL_CHANGES_PER_REQUEST_MAX:
            results.append(
                _result(ErrorCode.INVALID_REQUEST, f"more than {ACL_CHANGES_PER_REQUEST_MAX} ACLs in one request")
            )
        else:
            valid.append((len(results), binding))
            results.append(None)
    outcome = _result(ErrorCode.NONE, None)
    if valid:
        try:
            await ctx.manager.propose(CreateAcls(tuple(b for _, b in valid)))
        except KafkaError as e:
            outcome = _result(e.code, e.message)
    for i, _ in valid:
        results[i] = outcome
    return kio_codec.encode_response(30, ctx.version, {"throttle_time": 0, "results": results})


HANDLER = ApiHandler(key=30, min_version=1, max_version=3, handle=handle)
