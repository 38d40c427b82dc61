"""DescribeUserScramCredentials (API key 50), version 0: the SCRAM mechanisms and iteration counts of users (KIP-554),
never a salt or a key.

Runs in a shard process; answered from the shard's metadata image, as KRaft brokers answer from theirs
(``ScramImage.describe``). No users (null or empty) means every user with a credential, in name order; a named user
without a credential is RESOURCE_NOT_FOUND, a user named twice DUPLICATE_RESOURCE (one result for it), with
Kafka's messages.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from controller.acls import AclOperation
from controller.image import MetadataImage, ScramCredentialRecord
from rafka_shards.model import ErrorCode
from rafka_shards.protocol import kio_codec
from rafka_shards.security.sasl import ScramMechanism
from rafka_shards.security.scram_users import credentials_by_user, mechanism_named
from rafka_shards.shard.authz import AUTHORIZATION_FAILED_MESSAGE
from rafka_shards.shard.kafka.api import ApiHandler, RequestContext, ResponseBody


def _infos(records: list[ScramCredentialRecord]) -> list[dict[str, Any]]:
    out = []
    for r in records:
        mechanism = mechanism_named(r.mechanism)
        assert mechanism is not None, r.mechanism
        out.append({"mechanism": mechanism.kafka_type, "iterations": r.iterations})
    return out


def _result(user: str, code: ErrorCode = ErrorCode.NONE, message: str | None = None) -> dict[str, Any]:
    return {"user": user, "error_code": int(code), "error_message": message, "credential_infos": []}


def describe(image: MetadataImage, users: list[str] | None) -> list[dict[str, Any]]:
    """The response's results for ``users`` (None or empty: every user)."""
    if not users:
        return [
            {**_result(user), "credential_infos": _infos(records)}
            for user, records in credentials_by_user(image).items()
        ]
    counts = Counter(users)
    results = []
    for user in dict.fromkeys(users):  # each user once, in request order
        if counts[user] > 1:
            message = f"Cannot describe SCRAM credentials for the same user twice in a single request: {user}"
            results.append(_result(user, ErrorCode.DUPLICATE_RESOURCE, message))
            continue
        records = [r for m in ScramMechanism if (r := image.scram_credentials.get((user, m.value))) is not None]
        if not records:
            message = f"Attempt to describe a user credential that does not exist: {user}"
            results.append(_result(user, ErrorCode.RESOURCE_NOT_FOUND, message))
        else:
            results.append({**_result(user), "credential_infos": _infos(records)})
    return results


async def handle(ctx: RequestContext, req: Any) -> ResponseBody | None:
    # DESCRIBE on the cluster, denied with CLUSTER_AUTHORIZATION_FAILED in the top-level error_code and no results.
    if not ctx.access.cluster(AclOperation.DESCRIBE):
        body = {
            "throttle_time": 0,
            "error_code": int(ErrorCode.CLUSTER_AUTHORIZATION_FAILED),
            "error_message": AUTHORIZATION_FAILED_MESSAGE,
            "results": [],
        }
        return kio_codec.encode_response(50, ctx.version, body)
    users = None if req.users is None else [str(u.name) for u in req.users]
    results = describe(ctx.manager.image, users)
    return kio_codec.encode_response(
        50, ctx.version, {"throttle_time": 0, "error_code": 0, "error_message": None, "results": results}
    )


HANDLER = ApiHandler(key=50, min_version=0, max_version=0, handle=handle)
