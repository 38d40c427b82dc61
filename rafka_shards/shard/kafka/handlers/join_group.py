"""JoinGroup (API key 11), versions 0-9: join a classic group and wait for its rebalance.

Runs in a shard process; the group's state is ``rafka_shards.groups.classic`` on the coordinator. The response
waits until the rebalance completes (up to the rebalance timeout). v4+ requires a known member id (KIP-394: the
first join gets MEMBER_ID_REQUIRED and an id); v5+ carries ``group.instance.id`` (KIP-345); v0 has no rebalance
timeout (the session timeout serves).
"""

from __future__ import annotations

from typing import Any

from controller.acls import AclOperation
from rafka_shards.groups.classic import JoinRequest, JoinResult
from rafka_shards.model import KafkaError
from rafka_shards.protocol import kio_codec
from rafka_shards.shard.kafka.api import ApiHandler, RequestContext, ResponseBody


def _ms(value: Any) -> int:
    return int(value.total_seconds() * 1000)


async def handle(ctx: RequestContext, req: Any) -> ResponseBody | None:
    session_ms = _ms(req.session_timeout)
    join = JoinRequest(
        group_id=str(req.group_id),
        member_id=str(req.member_id),
        instance_id=getattr(req, "group_instance_id", None),
        protocol_type=str(req.protocol_type),
        protocols=tuple((str(p.name), bytes(p.metadata)) for p in req.protocols),
        session_timeout_ms=session_ms,
        rebalance_timeout_ms=_ms(req.rebalance_timeout) if ctx.version >= 1 else session_ms,
        client_id=ctx.header.client_id or "",
        client_host=ctx.client_host,
        require_known_member_id=ctx.version >= 4,
    )
    try:
        ctx.access.require_group(AclOperation.READ, join.group_id)
        result = await ctx.groups.join(join)
    except KafkaError as e:
        result = JoinResult(e.code, join.member_id)
    body = {
        "throttle_time": 0,
        "error_code": int(result.error),
        "generation_id": result.generation_id,
        "protocol_type": result.protocol_type,
        # Nullable from v7 on; before, an empty string stands for none.
        "protocol_name": result.protocol_name if ctx.version >= 7 else result.protocol_name or "",
        "leader": result.leader,
        "skip_assignment": False,
        "member_id": result.member_id,
        "members": [
            {"member_id": m.member_id, "group_instance_id": m.instance_id, "metadata": m.metadata}
            for m in result.members
        ],
    }
    return kio_codec.encode_response(11, ctx.version, body)


HANDLER = ApiHandler(key=11, min_version=0, max_version=9, handle=handle)
