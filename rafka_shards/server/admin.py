"""The node's HTTP admin endpoint (aiohttp): readiness and liveness probes, and a read-only view of topics.

Runs in the serving process. The full admin API (brokers, topic changes, partitions, controller) arrives with the
Raft controller issue; metrics with the shards issue. Every response is JSON.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import orjson
from aiohttp import web

from rafka_shards.config import Endpoint
from rafka_shards.model import TopicPartition

if TYPE_CHECKING:
    from rafka_shards.server.shard import Shard

REQUEST_BODY_MAX_BYTES = 1024 * 1024


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, content_type="application/json")


def build_app(shard: Shard) -> web.Application:
    app = web.Application(client_max_size=REQUEST_BODY_MAX_BYTES)

    async def ready(_request: web.Request) -> web.Response:
        if shard.ready:
            return _json({"status": "ready"})
        return _json({"error": "not_ready", "message": "the broker is starting or stopping"}, status=503)

    async def live(_request: web.Request) -> web.Response:
        return _json({"status": "live"})

    async def topics(_request: web.Request) -> web.Response:
        image = shard.manager.image
        return _json(
            [
                {
                    "name": t.name,
                    "topic_id": str(t.topic_id),
                    "partitions": len(t.partitions),
                    "configs": dict(t.configs),
                }
                for t in sorted(image.topics.values(), key=lambda t: t.name)
            ]
        )

    async def topic(request: web.Request) -> web.Response:
        name = request.match_info["name"]
        t = shard.manager.image.topics.get(name)
        if t is None:
            return _json({"error": "not_found", "message": f"topic {name!r} does not exist"}, status=404)
        partitions = []
        for p in t.partitions:
            entry: dict[str, Any] = {
                "partition": p.partition,
                "leader": p.leader,
                "leader_epoch": p.leader_epoch,
                "replicas": list(p.replicas),
                "isr": list(p.isr),
            }
            served = shard.manager.partitions.get(TopicPartition(name, p.partition))
            if served is not None:
                entry.update(
                    log_start_offset=served.log.log_start_offset,
                    high_watermark=served.log.high_watermark,
                    log_end_offset=served.log.log_end_offset,
                    size_bytes=served.log.size_bytes(),
                )
            partitions.append(entry)
        return _json(
            {"name": t.name, "topic_id": str(t.topic_id), "configs": dict(t.configs), "partitions": partitions}
        )

    app.router.add_get("/v1/status/ready", ready)
    app.router.add_get("/v1/status/live", live)
    app.router.add_get("/v1/topics", topics)
    app.router.add_get("/v1/topics/{name}", topic)
    return app


async def start_admin(shard: Shard, endpoint: Endpoint) -> web.AppRunner:
    runner = web.AppRunner(build_app(shard), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, endpoint.host, endpoint.port, reuse_address=True)
    await site.start()
    return runner
