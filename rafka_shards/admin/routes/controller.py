"""``/v1/controller``: the Raft quorum as this node sees it, and adding or removing voters. Answered locally."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from rafka_shards.admin.http import int_param, json_response
from rafka_shards.admin.routes import AdminContext, Route


async def controller_status(ctx: AdminContext, _request: web.Request) -> web.Response:
    """Raft state as this node sees it: leader, term, indexes, voters and learners with their lag."""
    quorum = ctx.ports.quorum
    st = quorum.status()
    match: dict[int, int] = {p.node: p.match for p in st.peers}
    match[st.node] = st.last_index if st.role.value == "leader" else st.commit

    def member(n: int) -> dict[str, Any]:
        out: dict[str, Any] = {"id": n}
        if st.role.value == "leader":
            out["match_index"] = match.get(n, 0)
            out["lag"] = max(0, st.last_index - match.get(n, 0))
        return out

    return json_response(
        {
            "node_id": st.node,
            "role": st.role.value,
            "leader": st.leader or None,
            "term": st.term,
            "commit_index": st.commit,
            "applied_index": quorum.applied_offset,
            "last_index": st.last_index,
            "snapshot_index": st.snapshot_index,
            "voters": [member(n) for n in sorted(st.conf.voters)],
            "learners": [member(n) for n in sorted(st.conf.learners)],
            "leader_changes": quorum.leader_changes,
            "transport_dropped": dict(quorum.dropped_frames),
            "transport_links": quorum.links(),
            "process": {"pid": ctx.ports.node.pid, "restarts": ctx.ports.node.restarts},
        }
    )


async def add_voter(ctx: AdminContext, request: web.Request) -> web.Response:
    voter = int_param(request, "id", 1, 2**31 - 1)
    await ctx.ports.quorum.add_voter(voter)
    return json_response({"voter": voter, "voters": sorted(ctx.ports.quorum.status().conf.voters)})


async def remove_voter(ctx: AdminContext, request: web.Request) -> web.Response:
    voter = int_param(request, "id", 1, 2**31 - 1)
    await ctx.ports.quorum.remove_voter(voter)
    return json_response({"removed": voter, "voters": sorted(ctx.ports.quorum.status().conf.voters)})


ROUTES = (
    Route("GET", "/v1/controller", controller_status, "the Raft quorum as this node sees it", linearizable=False),
    Route(
        "POST",
        "/v1/controller/voters/{id}",
        add_voter,
        "add a node as voter (learner until caught up)",
        linearizable=False,
    ),
    Route("DELETE", "/v1/controller/voters/{id}", remove_voter, "remove a voter", linearizable=False),
)
