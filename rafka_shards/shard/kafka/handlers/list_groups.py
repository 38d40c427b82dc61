"""ListGroups (API key 16), versions 0-5: the groups this shard coordinates.

Runs in a shard process. Like a Kafka broker, a shard lists the groups of the ``__consumer_offsets`` partitions it
leads; admin clients ask every broker. v4+ filters by state (case-insensitive), v5+ by type (every group here is
"classic" or "consumer", KIP-848). COORDINATOR_LOAD_IN_PROGRESS while a partition is being loaded.
"""

from __future__ import annotations

from typing import Any

from controller.acls import AclOperation, ResourceType
from rafka_shards.model import ErrorCode
from rafka_shards.protocol import kio_codec
from rafka_shards.shard.kafka.api import ApiHandler, RequestContext, ResponseBody


async def handle(ctx: RequestContext, req: Any) -> ResponseBody | None:
    states = {str(s).lower() for s in getattr(req, "states_filter", ()) or ()}
    types = {str(t).lower() for t in getattr(req, "types_filter", ()) or ()}
    error = ErrorCode.COORDINATOR_LOAD_IN_PROGRESS if ctx.groups.loading() else ErrorCode.NONE
    # DESCRIBE on the cluster lists every group, else only those the principal may describe (never an error).
    access = ctx.access
    every = access.allows_cluster_quietly(AclOperation.DESCRIBE)
    groups = [
        {"group_id": d.group_id, "protocol_type": d.protocol_type, "group_state": d.state, "group_type": d.group_type}
        for d in ctx.groups.list_groups()
        if (not states or d.state.lower() in states) and (not types or d.group_type in types)
        if every or access.allows(AclOperation.DESCRIBE, ResourceType.GROUP, d.group_id, audit=False)
    ]
    return kio_codec.encode_response(16, ctx.version, {"throttle_time": 0, "error_code": int(error), "groups": groups})


HANDLER = ApiHandler(key=16, min_version=0, max_version=5, handle=handle)
