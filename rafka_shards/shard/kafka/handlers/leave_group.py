"""LeaveGroup (API key 13), versions 0-5: members leave a group at once instead of timing out.

Runs in a shard process. v3+ names several members, each by member id or by ``group.instance.id`` (KIP-345), with
an error per member.
"""

from __future__ import annotations

from typing import Any

from controller.acls import AclOperation
from rafka_shards.model import ErrorCode, KafkaError
from rafka_shards.protocol import kio_codec
from rafka_shards.shard.kafka.api import ApiHandler, RequestContext, ResponseBody


async def handle(ctx: RequestContext, req: Any) -> ResponseBody | None:
    if ctx.version < 3:
        members: list[tuple[str, str | None]] = [(str(req.member_id), None)]
    else:
        members = [(str(m.member_id), m.group_instance_id) for m in req.members]
    try:
        ctx.access.require_group(AclOperation.READ, str(req.group_id))
        error, errors = ctx.groups.leave(str(req.group_id), members)
    except KafkaError as e:
        error, errors = e.code, [e.code] * len(members)
    if ctx.version < 3 and error is ErrorCode.NONE:
        error = errors[0]
    body = {
        "throttle_time": 0,
        "error_code": int(error),
        "members": [
            {"member_id": m, "group_instance_id": i, "error_code": int(e)}
            for (m, i), e in zip(members, errors, strict=True)
        ],
    }
    return kio_codec.encode_response(13, ctx.version, body)


HANDLER = ApiHandler(key=13, min_version=0, max_version=5, handle=handle)
