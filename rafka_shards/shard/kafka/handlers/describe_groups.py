"""DescribeGroups (API key 15), versions 0-5: state, protocol and members of groups this shard coordinates.

Runs in a shard process. An unknown group is reported Dead with no error, as Kafka does; members' metadata and
assignment are shown only in the Stable state. v3+ may ask for the authorized operations: with no ACLs every group
operation is allowed. DESCRIBE on each group, else GROUP_AUTHORIZATION_FAILED for that group.
"""

from __future__ import annotations

from typing import Any

from controller.acls import AUTHORIZED_OPERATIONS_OMITTED, AclOperation, ResourceType
from rafka_shards.model import KafkaError
from rafka_shards.protocol import kio_codec
from rafka_shards.shard.kafka.api import ApiHandler, RequestContext, ResponseBody


def _describe(ctx: RequestContext, group_id: str, with_operations: bool) -> dict[str, Any]:
    body: dict[str, Any] = {
        "error_code": 0,
        "group_id": group_id,
        "group_state": "",
        "protocol_type": "",
        "protocol_data": "",
        "members": [],
        "authorized_operations": (
            ctx.access.authorized_operations(ResourceType.GROUP, group_id)
            if with_operations
            else AUTHORIZED_OPERATIONS_OMITTED
        ),
    }
    try:
        ctx.access.require_group(AclOperation.DESCRIBE, group_id)
        d = ctx.groups.describe(group_id)
    except KafkaError as e:
        body["error_code"] = int(e.code)
        return body
    body.update(group_state=d.state, protocol_type=d.protocol_type, protocol_data=d.protocol_name)
    body["members"] = [
        {
            "member_id": m.member_id,
            "group_instance_id": m.instance_id,
            "client_id": m.client_id,
            "client_host": m.client_host,
            "member_metadata": m.metadata,
            "member_assignment": m.assignment,
        }
        for m in d.members
    ]
    return body


async def handle(ctx: RequestContext, req: Any) -> ResponseBody | None:
    with_operations = bool(getattr(req, "include_authorized_operations", False))
    groups = [_describe(ctx, str(g), with_operations) for g in req.groups]
    return kio_codec.encode_response(15, ctx.version, {"throttle_time": 0, "groups": groups})


HANDLER = ApiHandler(key=15, min_version=0, max_version=5, handle=handle)
