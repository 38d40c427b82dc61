"""The node's HTTP admin endpoint (aiohttp): probes, ``/metrics``, a read-only view of shards and topics.

Runs in the supervisor process. The full admin API (brokers, topic changes, partitions, controller) arrives with the
Raft controller issue. Every response but ``/metrics`` (Prometheus text) is JSON; errors are
``{"error": ..., "message": ...}`` with a 4xx/5xx status.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import orjson
from aiohttp import web

from controller.image import MetadataImage
from rafka_shards.config import Endpoint
from rafka_shards.node.metrics import CONTENT_TYPE, NodeMetrics
from rafka_shards.node.supervisor import describe_exit

if TYPE_CHECKING:
    from rafka_shards.node.supervisor import Supervisor

REQUEST_BODY_MAX_BYTES = 1024 * 1024


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, content_type="application/json")


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
