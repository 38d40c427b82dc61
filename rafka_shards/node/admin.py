"""The node's HTTP admin endpoint (aiohttp): probes, ``/metrics``, a read-only view of shards and topics.

Runs in the supervisor process. The controller's Raft state and voters (``/v1/controller``) and the registered
brokers are here; topic writes, maintenance, partitions and health are not yet. Every response but ``/metrics``
(Prometheus text) is JSON; errors are
``{"error": ..., "message": ...}`` with a 4xx/5xx status.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any

import orjson
from aiohttp import web

from controller.image import MetadataImage
from controller.raft.node import ConfChangeError, ConfChangeOp, NotLeader, ProposalDropped
from rafka_shards.config import Endpoint
from rafka_shards.node.metrics import CONTENT_TYPE, NodeMetrics
from rafka_shards.node.raft_controller import ControllerUnavailable, RaftController
from rafka_shards.node.supervisor import describe_exit

if TYPE_CHECKING:
    from rafka_shards.node.supervisor import Supervisor

REQUEST_BODY_MAX_BYTES = 1024 * 1024


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, content_type="application/json")


def broker_json(image: MetadataImage, broker_id: int) -> dict[str, Any]:
    b = image.brokers[broker_id]
    leaders = replicas = 0
    for t in image.topics.values():
        for p in t.partitions:
            replicas += broker_id in p.replicas
            leaders += p.leader == broker_id
    if b.fenced:
        status = "fenced"
    elif b.decommissioning:
        status = "decommissioning" if replicas else "drained"
    elif b.maintenance:
        status = "maintenance"
    else:
        status = "active"
    return {
        "broker_id": b.broker_id,
        "host": b.host,
        "port": b.port,
        "rack": b.rack,
        "incarnation": b.incarnation,
        "status": status,
        "fenced": b.fenced,
        "maintenance": b.maintenance,
        "decommissioning": b.decommissioning,
        "leader_partitions": leaders,
        "replica_partitions": replicas,
    }


def build_app(supervisor: Supervisor) -> web.Application:
    app = web.Application(client_max_size=REQUEST_BODY_MAX_BYTES)
    metrics = NodeMetrics(supervisor)

    def image() -> MetadataImage:
        assert supervisor.controller is not None
        return supervisor.controller.image

    async def ready(_request: web.Request) -> web.Response:
        if supervisor.ready:
            return _json({"status": "ready", "shards": supervisor.shard_count})
        down = [s.index for s in supervisor.slots if not s.ready]
        return _json(
            {"error": "not_ready", "message": f"the node is starting, stopping, or shard(s) {down} are not ready"},
            status=503,
        )

    async def live(_request: web.Request) -> web.Response:
        return _json({"status": "live"})

    async def shards(_request: web.Request) -> web.Response:
        return _json(
            [
                {
                    "shard": s.index,
                    "broker_id": s.config.broker_id,
                    "listen": s.config.listen,
                    "pid": s.pid,
                    "ready": s.ready,
                    "restarts": s.restarts_total,
                    "last_exit": None if s.last_exit_code is None else describe_exit(s.last_exit_code),
                }
                for s in supervisor.slots
            ]
        )

    async def prometheus(_request: web.Request) -> web.Response:
        body = await metrics.render()
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})

    async def topics(_request: web.Request) -> web.Response:
        return _json(
            [
                {
                    "name": t.name,
                    "topic_id": str(t.topic_id),
                    "partitions": len(t.partitions),
                    "configs": dict(t.configs),
                }
                for t in sorted(image().topics.values(), key=lambda t: t.name)
            ]
        )

    async def topic(request: web.Request) -> web.Response:
        name = request.match_info["name"]
        t = image().topics.get(name)
        if t is None:
            return _json({"error": "not_found", "message": f"topic {name!r} does not exist"}, status=404)
        now = {
            (p.topic, p.partition): p for stats in (await supervisor.gather_stats()).values() for p in stats.partitions
        }
        partitions = []
        for p in t.partitions:
            entry: dict[str, Any] = {
                "partition": p.partition,
                "leader": p.leader,
                "leader_epoch": p.leader_epoch,
                "replicas": list(p.replicas),
                "isr": list(p.isr),
            }
            served = now.get((name, p.partition))
            if served is not None:
                entry.update(
                    log_start_offset=served.log_start_offset,
                    high_watermark=served.high_watermark,
                    log_end_offset=served.log_end_offset,
                    size_bytes=served.size_bytes,
                )
            partitions.append(entry)
        return _json(
            {"name": t.name, "topic_id": str(t.topic_id), "configs": dict(t.configs), "partitions": partitions}
        )

    def controller() -> RaftController:
        assert supervisor.controller is not None
        return supervisor.controller

    async def controller_status(_request: web.Request) -> web.Response:
        """Raft state as this node sees it: leader, term, indexes, voters and learners with their lag."""
        c = controller()
        st = c.status()
        match: dict[int, int] = {p.node: p.match for p in st.peers}
        match[st.node] = st.last_index if st.role.value == "leader" else st.commit

        def member(n: int) -> dict[str, Any]:
            out: dict[str, Any] = {"id": n}
            if st.role.value == "leader":
                out["match_index"] = match.get(n, 0)
                out["lag"] = max(0, st.last_index - match.get(n, 0))
            return out

        return _json(
            {
                "node_id": st.node,
                "role": st.role.value,
                "leader": st.leader or None,
                "term": st.term,
                "commit_index": st.commit,
                "applied_index": c.applied_offset,
                "last_index": st.last_index,
                "snapshot_index": st.snapshot_index,
                "voters": [member(n) for n in sorted(st.conf.voters)],
                "learners": [member(n) for n in sorted(st.conf.learners)],
                "leader_changes": c.leader_changes,
                "transport_dropped": dict(c.transport.dropped),
            }
        )

    def _node_id(request: web.Request) -> int:
        text = request.match_info["id"]
        if not text.isdigit() or not 0 < int(text) < 2**31:
            raise web.HTTPBadRequest(
                body=orjson.dumps({"error": "bad_request", "message": f"id: expected a node id, got {text!r}"}),
                content_type="application/json",
            )
        return int(text)

    async def change_voters(change: Awaitable[object], result: dict[str, Any]) -> web.Response:
        try:
            await change
        except ConfChangeError as e:
            return _json({"error": "conflict", "message": str(e)}, status=409)
        except (ControllerUnavailable, ProposalDropped, NotLeader) as e:
            return _json({"error": "unavailable", "message": str(e), "retry_after_ms": 500}, status=503)
        return _json({**result, "voters": sorted(controller().status().conf.voters)})

    async def add_voter(request: web.Request) -> web.Response:
        node = _node_id(request)
        return await change_voters(controller().add_voter(node), {"voter": node})

    async def remove_voter(request: web.Request) -> web.Response:
        node = _node_id(request)
        return await change_voters(controller().change_membership(ConfChangeOp.REMOVE, node), {"removed": node})

    async def brokers(_request: web.Request) -> web.Response:
        img = image()
        return _json([broker_json(img, b) for b in sorted(img.brokers)])

    app.router.add_get("/v1/controller", controller_status)
    app.router.add_post("/v1/controller/voters/{id}", add_voter)
    app.router.add_delete("/v1/controller/voters/{id}", remove_voter)
    app.router.add_get("/v1/brokers", brokers)
    app.router.add_get("/v1/status/ready", ready)
    app.router.add_get("/v1/status/live", live)
    app.router.add_get("/v1/shards", shards)
    app.router.add_get("/metrics", prometheus)
    app.router.add_get("/v1/topics", topics)
    app.router.add_get("/v1/topics/{name}", topic)
    return app


async def start_admin(supervisor: Supervisor, endpoint: Endpoint) -> web.AppRunner:
    runner = web.AppRunner(build_app(supervisor), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, endpoint.host, endpoint.port, reuse_address=True)
    await site.start()
    return runner
