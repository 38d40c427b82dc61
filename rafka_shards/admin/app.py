"""The node's HTTP admin API (aiohttp + orjson): probes, ``/metrics``, brokers, topics, partitions, cluster health,
the controller quorum, and an OpenAPI document of all of it at ``/v1/openapi.json``.

Runs in the controller process, on the listening socket the supervisor bound; every node serves it. Reads come from
this node's applied metadata image after a ReadIndex barrier (``RaftController.read_barrier``), so a read on any node
sees every write acknowledged before it.
Writes are metadata commands committed through the Raft quorum (a follower forwards them to the leader) and answered
once this node's shards applied them (``cluster_admin``). Every response but ``/metrics`` (Prometheus text) is JSON;
errors are ``{"error": ..., "message": ...}`` (plus ``field`` for a bad field, ``retry_after_ms`` for 503): 400 bad
input (nothing is proposed), 404 unknown topic/partition/broker, 405, 409 a change the cluster's state does not
allow, 413 a body over ``REQUEST_BODY_MAX_BYTES``, 503 no controller leader.
"""

from __future__ import annotations

import collections
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson
from aiohttp import web

from controller.image import MetadataImage, PartitionImage, TopicImage
from controller.placement import replica_counts
from controller.raft.node import ConfChangeError, ConfChangeOp, NotLeader, ProposalDropped
from controller.state_machine import CommandRejected, Rejection, RejectKind
from rafka_shards.admin import requests as req
from rafka_shards.admin.cluster_admin import ClusterAdmin
from rafka_shards.admin.metrics import CONTENT_TYPE, NodeMetrics
from rafka_shards.admin.requests import BadRequest
from rafka_shards.controller_node.raft_controller import ControllerUnavailable, RaftController

if TYPE_CHECKING:
    from rafka_shards.controller_node.process import ControllerHost

REQUEST_BODY_MAX_BYTES = 1024 * 1024
RETRY_AFTER_MS = 500

_STATUS: dict[RejectKind, tuple[int, str]] = {
    RejectKind.INVALID_TOPIC: (400, "bad_request"),
    RejectKind.INVALID_PARTITIONS: (400, "bad_request"),
    RejectKind.INVALID_REPLICATION_FACTOR: (400, "bad_request"),
    RejectKind.INVALID_REPLICA_ASSIGNMENT: (400, "bad_request"),
    RejectKind.INVALID_CONFIG: (400, "bad_request"),
    RejectKind.INVALID_REQUEST: (400, "bad_request"),
    RejectKind.UNKNOWN_TOPIC: (404, "not_found"),
    RejectKind.UNKNOWN_BROKER: (404, "not_found"),
    RejectKind.TOPIC_ALREADY_EXISTS: (409, "conflict"),
    RejectKind.STALE_LEADER_EPOCH: (409, "conflict"),
    RejectKind.CONFLICT: (409, "conflict"),
    RejectKind.CONTROLLER_UNAVAILABLE: (503, "unavailable"),
}


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, content_type="application/json")


def _error(status: int, error: str, message: str, **extra: Any) -> web.Response:
    return _json({"error": error, "message": message, **extra}, status=status)


def _unavailable(message: str) -> web.Response:
    return _error(503, "unavailable", message, retry_after_ms=RETRY_AFTER_MS)


@web.middleware
async def _errors(request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> Any:
    """Every failure as a JSON error with the right status; nothing of a failed request has been proposed."""
    try:
        return await handler(request)
    except BadRequest as e:
        extra = {} if e.field is None else {"field": e.field}
        return _error(400, "bad_request", e.message, **extra)
    except CommandRejected as e:
        status, error = _STATUS[e.rejection.kind]
        if status == 503:
            return _unavailable(e.rejection.message)
        return _error(status, error, e.rejection.message)
    except (ControllerUnavailable, ProposalDropped, NotLeader) as e:
        return _unavailable(str(e))
    except ConfChangeError as e:
        return _error(409, "conflict", str(e))
    except web.HTTPRequestEntityTooLarge:
        return _error(413, "too_large", f"the request body exceeds {REQUEST_BODY_MAX_BYTES} bytes")
    except web.HTTPException as e:
        if e.content_type == "application/json":
            raise
        return _error(e.status, e.reason.lower().replace(" ", "_"), e.reason)


@dataclass(frozen=True, slots=True)
class Route:
    method: str
    path: str
    handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    summary: str
    body: str | None = None  # a JSON example of the request body, for the OpenAPI document
    linearizable: bool = True  # reads the metadata image after a ReadIndex barrier (probes and quorum views: local)


def brokers_json(image: MetadataImage, broker_ids: list[int]) -> list[dict[str, Any]]:
    """The brokers with their status and partition counts (one pass over the partitions for all of them)."""
    replicas_on = replica_counts(image)
    leaders_on = collections.Counter(p.leader for t in image.topics.values() for p in t.partitions)
    out = []
    for broker_id in broker_ids:
        b = image.brokers[broker_id]
        replicas = replicas_on[broker_id]
        if b.fenced:
            status = "fenced"
        elif b.decommissioning:
            status = "decommissioning" if replicas else "drained"
        elif b.maintenance:
            status = "maintenance"
        else:
            status = "active"
        out.append(
            {
                "broker_id": b.broker_id,
                "host": b.host,
                "port": b.port,
                "rack": b.rack,
                "incarnation": b.incarnation,
                "epoch": b.epoch,  # the broker epoch: offset of this incarnation's RegisterBroker record
                "status": status,
                "fenced": b.fenced,
                "maintenance": b.maintenance,
                "decommissioning": b.decommissioning,
                "leader_partitions": leaders_on[broker_id],
                "replica_partitions": replicas,
            }
        )
    return out


def _partition_json(t: TopicImage, p: PartitionImage) -> dict[str, Any]:
    return {
        "topic": t.name,
        "partition": p.partition,
        "leader": p.leader,
        "leader_epoch": p.leader_epoch,
        "partition_epoch": p.partition_epoch,
        "replicas": list(p.replicas),
        "isr": list(p.isr),
        "adding_replicas": list(p.adding),  # a reassignment in progress: these copy the log, then
        "removing_replicas": list(p.removing),  # these leave
    }


def _topic_json(t: TopicImage) -> dict[str, Any]:
    return {
        "name": t.name,
        "topic_id": str(t.topic_id),
        "partitions": len(t.partitions),
        "replication_factor": len(t.partitions[0].replicas),
        "configs": dict(t.configs),
    }


def _int_param(request: web.Request, name: str, lo: int, hi: int) -> int:
    text = request.match_info[name]
    if not text.isdigit() or not lo <= int(text) <= hi:
        raise BadRequest(name, f"{name}: expected an integer {lo}..{hi}, got {text!r}")
    return int(text)


def build_app(node: ControllerHost) -> web.Application:
    def _linearizable(
        handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
    ) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        """The handler sees every metadata change acknowledged before the request came, whichever node took it:
        this node's image has applied the leader's commit index of now (ReadIndex) before the handler runs."""

        async def run(request: web.Request) -> web.StreamResponse:
            await controller().read_barrier()
            return await handler(request)

        return run

    app = web.Application(client_max_size=REQUEST_BODY_MAX_BYTES, middlewares=[_errors])
    metrics = NodeMetrics(node)
    cluster = ClusterAdmin(node)

    def image() -> MetadataImage:
        assert node.controller is not None
        return node.controller.image

    def controller() -> RaftController:
        assert node.controller is not None
        return node.controller

    # ---- probes, shards, metrics -----------------------------------------------------------------------------

    async def ready(_request: web.Request) -> web.Response:
        if node.ready:
            return _json({"status": "ready", "shards": node.shard_count})
        down = [s.index for s in node.slots if not s.ready]
        return _error(503, "not_ready", f"the node is starting, stopping, or shard(s) {down} are not ready")

    async def live(_request: web.Request) -> web.Response:
        return _json({"status": "live"})

    async def shards(_request: web.Request) -> web.Response:
        out = []
        for s in node.slots:
            session = s.session
            out.append(
                {
                    "shard": s.index,
                    "broker_id": s.broker_id,
                    "listen": s.listen,
                    "pid": s.pid,
                    "ready": s.ready,
                    "restarts": s.restarts_total,
                    "last_exit": s.last_exit,
                    "metadata_offset": -1 if session is None else session.applied_offset,
                    "metadata_lag": None if session is None else session.metadata_lag,
                }
            )
        return _json(out)

    async def prometheus(_request: web.Request) -> web.Response:
        body = await metrics.render()
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})

    # ---- brokers ---------------------------------------------------------------------------------------------

    def _broker_id(request: web.Request) -> int:
        broker_id = _int_param(request, "id", 0, 2**31 - 1)
        if broker_id not in image().brokers:
            raise CommandRejected(Rejection(RejectKind.UNKNOWN_BROKER, f"broker {broker_id} is not registered"))
        return broker_id

    async def brokers(_request: web.Request) -> web.Response:
        img = image()
        return _json(brokers_json(img, sorted(img.brokers)))

    async def broker(request: web.Request) -> web.Response:
        broker_id = _broker_id(request)
        out = brokers_json(image(), [broker_id])[0]
        local = next((s for s in node.slots if s.broker_id == broker_id), None)
        if local is not None:
            session = local.session
            out["local_shard"] = local.index
            out["metadata_offset"] = None if session is None else session.applied_offset
            out["metadata_lag"] = None if session is None else session.metadata_lag
        leases = controller().leases
        if leases is not None:  # this node is the active controller: it knows how long the lease still runs
            out["lease_remaining_ms"] = leases.remaining_ms(broker_id, controller().now_ms())
        return _json(out)

    async def maintenance_on(request: web.Request) -> web.Response:
        broker_id = _broker_id(request)
        await cluster.set_maintenance(broker_id, True)
        return _json(brokers_json(image(), [broker_id])[0])

    async def maintenance_off(request: web.Request) -> web.Response:
        broker_id = _broker_id(request)
        await cluster.set_maintenance(broker_id, False)
        return _json(brokers_json(image(), [broker_id])[0])

    async def decommission(request: web.Request) -> web.Response:
        broker_id = _broker_id(request)
        await cluster.decommission(broker_id)
        return _json(brokers_json(image(), [broker_id])[0])

    # ---- topics ----------------------------------------------------------------------------------------------

    def _topic(name: str) -> TopicImage:
        t = image().topics.get(name)
        if t is None:
            raise CommandRejected(Rejection(RejectKind.UNKNOWN_TOPIC, f"topic {name!r} does not exist"))
        return t

    async def topics(_request: web.Request) -> web.Response:
        return _json([_topic_json(t) for t in sorted(image().topics.values(), key=lambda t: t.name)])

    async def create_topic(request: web.Request) -> web.Response:
        config = node.config
        body = req.parse_create_topic(
            await request.read(), config.default_partitions, config.default_replication_factor
        )
        t = await cluster.create_topic(body)
        return _json(_topic_json(t), status=201)

    async def topic(request: web.Request) -> web.Response:
        t = _topic(request.match_info["name"])
        partitions = [_partition_json(t, p) for p in t.partitions]
        stats = await node.gather_stats()
        local = {(ps.topic, ps.partition): ps for st in stats.values() for ps in st.partitions}
        for entry in partitions:
            served = local.get((t.name, entry["partition"]))
            if served is not None:  # led by a shard of this node: its offsets (others: /v1/partitions/...)
                entry.update(
                    log_start_offset=served.log_start_offset,
                    high_watermark=served.high_watermark,
                    log_end_offset=served.log_end_offset,
                    size_bytes=served.size_bytes,
                )
        return _json({**_topic_json(t), "partitions": partitions})

    async def patch_topic(request: web.Request) -> web.Response:
        name = request.match_info["name"]
        _topic(name)
        t = await cluster.patch_topic(name, req.parse_patch_topic(await request.read()))
        return _json(_topic_json(t))

    async def delete_topic(request: web.Request) -> web.Response:
        name = request.match_info["name"]
        _topic(name)
        await cluster.delete_topic(name)
        return _json({"deleted": name})

    # ---- partitions ------------------------------------------------------------------------------------------

    def _partition_key(request: web.Request) -> tuple[str, int]:
        return request.match_info["topic"], _int_param(request, "partition", 0, 2**31 - 1)

    async def partition(request: web.Request) -> web.Response:
        name, index = _partition_key(request)
        t, p = cluster.partition(name, index)
        offsets = await cluster.offsets(name, index)
        return _json({**_partition_json(t, p), "offsets": offsets})

    async def transfer_leadership(request: web.Request) -> web.Response:
        name, index = _partition_key(request)
        cluster.partition(name, index)
        p = await cluster.transfer_leadership(name, index, req.parse_transfer(await request.read()))
        return _json(_partition_json(image().topics[name], p))

    async def reassign(request: web.Request) -> web.Response:
        name, index = _partition_key(request)
        cluster.partition(name, index)
        p = await cluster.reassign(name, index, req.parse_replicas(await request.read()))
        return _json(_partition_json(image().topics[name], p))

    async def health(_request: web.Request) -> web.Response:
        return _json(cluster.health_overview())

    # ---- the controller quorum -------------------------------------------------------------------------------

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
                "transport_links": c.transport.links(),
                "process": {"pid": node.pid, "restarts": node.restarts},
            }
        )

    async def add_voter(request: web.Request) -> web.Response:
        voter = _int_param(request, "id", 1, 2**31 - 1)
        await controller().add_voter(voter)
        return _json({"voter": voter, "voters": sorted(controller().status().conf.voters)})

    async def remove_voter(request: web.Request) -> web.Response:
        voter = _int_param(request, "id", 1, 2**31 - 1)
        await controller().change_membership(ConfChangeOp.REMOVE, voter)
        return _json({"removed": voter, "voters": sorted(controller().status().conf.voters)})

    async def openapi(_request: web.Request) -> web.Response:
        return _json(openapi_document(routes))

    routes = [
        Route(
            "GET",
            "/v1/status/ready",
            ready,
            "200 once every shard caught up, registered and accepts; else 503",
            linearizable=False,
        ),
        Route("GET", "/v1/status/live", live, "200 while the controller process's event loop runs", linearizable=False),
        Route(
            "GET",
            "/v1/shards",
            shards,
            "this node's shard processes: pid, readiness, restarts, metadata lag",
            linearizable=False,
        ),
        Route("GET", "/metrics", prometheus, "Prometheus text: shards, partitions, Raft", linearizable=False),
        Route("GET", "/v1/brokers", brokers, "every registered broker with its status and partition counts"),
        Route("GET", "/v1/brokers/{id}", broker, "one broker; lease and metadata lag where this node knows them"),
        Route("PUT", "/v1/brokers/{id}/maintenance", maintenance_on, "drain leadership, take no new replicas"),
        Route("DELETE", "/v1/brokers/{id}/maintenance", maintenance_off, "end maintenance"),
        Route(
            "PUT",
            "/v1/brokers/{id}/decommission",
            decommission,
            "no new replicas; its replicas move to other nodes; drained once none are left",
        ),
        Route("GET", "/v1/topics", topics, "every topic"),
        Route(
            "POST",
            "/v1/topics",
            create_topic,
            "create a topic (201); partitions and replication_factor default to the node's settings",
            '{"name": "orders", "partitions": 6, "replication_factor": 1, "configs": {"retention.ms": "86400000"}}',
        ),
        Route("GET", "/v1/topics/{name}", topic, "a topic with its partitions (offsets of those led on this node)"),
        Route(
            "PATCH",
            "/v1/topics/{name}",
            patch_topic,
            "add partitions, change the replication factor, set configs (null deletes one)",
            '{"partitions": 12, "configs": {"retention.ms": "3600000", "segment.ms": null}}',
        ),
        Route("DELETE", "/v1/topics/{name}", delete_topic, "delete a topic and its data"),
        Route("GET", "/v1/partitions/{topic}/{partition}", partition, "leader, replicas, ISR, epochs and offsets"),
        Route(
            "POST",
            "/v1/partitions/{topic}/{partition}/transfer_leadership",
            transfer_leadership,
            "make an in-sync replica the leader (new leader epoch)",
            '{"target": 20}',
        ),
        Route(
            "POST",
            "/v1/partitions/{topic}/{partition}/replicas",
            reassign,
            "new replica list (preferred leader first); in-sync replicas must stay",
            '{"replicas": [0, 10, 20]}',
        ),
        Route(
            "GET",
            "/v1/cluster/health_overview",
            health,
            "healthy or why not: controller, nodes, partitions",
            linearizable=False,
        ),
        Route("GET", "/v1/controller", controller_status, "the Raft quorum as this node sees it", linearizable=False),
        Route(
            "POST",
            "/v1/controller/voters/{id}",
            add_voter,
            "add a node as voter (learner until caught up)",
            linearizable=False,
        ),
        Route("DELETE", "/v1/controller/voters/{id}", remove_voter, "remove a voter", linearizable=False),
        Route("GET", "/v1/openapi.json", openapi, "this document", linearizable=False),
    ]
    for route in routes:
        app.router.add_route(
            route.method, route.path, _linearizable(route.handler) if route.linearizable else route.handler
        )
    return app


def openapi_document(routes: list[Route]) -> dict[str, Any]:
    """OpenAPI 3.0 from the route table itself, so the document and the routes cannot drift apart."""
    error = {"$ref": "#/components/schemas/Error"}
    paths: dict[str, dict[str, Any]] = {}
    for r in routes:
        params = [
            {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
            for name in (part[1:-1] for part in r.path.split("/") if part.startswith("{"))
        ]
        op: dict[str, Any] = {
            "summary": r.summary,
            "operationId": f"{r.method.lower()}_{r.handler.__name__}",
            "parameters": params,
            "responses": {
                "200" if not (r.method == "POST" and r.path == "/v1/topics") else "201": {"description": "OK"},
                "400": {"description": "bad input, field named", "content": {"application/json": {"schema": error}}},
                "404": {"description": "unknown topic, partition or broker"},
                "409": {"description": "the cluster's state does not allow it"},
                "503": {"description": "no controller leader; retry after retry_after_ms"},
            },
        }
        if r.body is not None:
            op["requestBody"] = {
                "required": True,
                "content": {"application/json": {"schema": {"type": "object"}, "example": orjson.loads(r.body)}},
            }
        paths.setdefault(r.path, {})[r.method.lower()] = op
    return {
        "openapi": "3.0.3",
        "info": {"title": "rafka_shards admin API", "version": "1"},
        "paths": paths,
        "components": {
            "schemas": {
                "Error": {
                    "type": "object",
                    "required": ["error", "message"],
                    "properties": {
                        "error": {"type": "string"},
                        "message": {"type": "string"},
                        "field": {"type": "string"},
                        "retry_after_ms": {"type": "integer"},
                    },
                }
            }
        },
    }


async def start_admin(node: ControllerHost, listener: socket.socket) -> web.AppRunner:
    runner = web.AppRunner(build_app(node), access_log=None)
    await runner.setup()
    site = web.SockSite(runner, listener)
    await site.start()
    return runner
