"""``/v1/groups``: consumer groups as their coordinators see them (``rafka_shards.admin.groups_view``).

A group's committed offsets come with the partition's log end (high watermark) and the lag, the number people alert
on. Deleting a group works as Kafka's DeleteGroups: only an empty one (409 otherwise).
"""

from __future__ import annotations

from aiohttp import web

from rafka_shards.admin import groups_view
from rafka_shards.admin.http import RETRY_AFTER_MS, error_response, json_response
from rafka_shards.admin.routes import AdminContext, Route
from rafka_shards.model import ErrorCode


def _unavailable(e: groups_view.GroupsUnavailable) -> web.Response:
    return error_response(503, "unavailable", str(e), retry_after_ms=RETRY_AFTER_MS)


async def groups(ctx: AdminContext, _request: web.Request) -> web.Response:
    return json_response(await groups_view.list_groups(ctx.image, ctx.ports.inter_broker))


async def group(ctx: AdminContext, request: web.Request) -> web.Response:
    group_id = request.match_info["group"]
    local = {s.broker_id for s in ctx.ports.node.slots}
    try:
        described = await groups_view.describe_group(
            ctx.image, group_id, await ctx.ports.node.gather_stats(), local, ctx.ports.inter_broker
        )
    except groups_view.GroupsUnavailable as e:
        return _unavailable(e)
    if described is None:
        return error_response(404, "not_found", f"group {group_id!r} does not exist")
    return json_response(described)


async def delete_group(ctx: AdminContext, request: web.Request) -> web.Response:
    group_id = request.match_info["group"]
    try:
        code = await groups_view.delete_group(ctx.image, group_id, ctx.ports.inter_broker)
    except groups_view.GroupsUnavailable as e:
        return _unavailable(e)
    if code is ErrorCode.NONE:
        return json_response({"deleted": group_id})
    if code is ErrorCode.GROUP_ID_NOT_FOUND:
        return error_response(404, "not_found", f"group {group_id!r} does not exist")
    if code is ErrorCode.NON_EMPTY_GROUP:
        return error_response(409, "conflict", f"group {group_id!r} has members: only an empty group can be deleted")
    return error_response(503, "unavailable", f"group {group_id!r}: {code.name}", retry_after_ms=RETRY_AFTER_MS)


ROUTES = (
    Route("GET", "/v1/groups", groups, "every consumer group of the cluster, with its state and coordinator"),
    Route(
        "GET",
        "/v1/groups/{group}",
        group,
        "a group: state, protocol, members (client id, host, assignment), committed offsets with log end and lag",
    ),
    Route("DELETE", "/v1/groups/{group}", delete_group, "delete an empty group and its committed offsets"),
)
