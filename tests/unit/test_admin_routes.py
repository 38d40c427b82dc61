"""The admin API's routes on fake ports (no processes): the route tables, the OpenAPI document built from them, and
topic requests through the topics frontend with their statuses and fields."""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient, TestServer

from controller import topics
from controller.commands import Command, RegisterBroker
from controller.image import MetadataImage
from controller.state_machine import CommandRejected, apply, validate
from rafka_shards.admin.app import ROUTES, build_app
from rafka_shards.admin.ports import AdminPorts, AdminSecurity, ShardView
from rafka_shards.admin.routes.openapi import openapi_document
from rafka_shards.ipc.channel import Stats


class FakeMetadata:
    """The image, the barrier and the proposer of a one-node quorum that applies what validates."""

    def __init__(self, brokers: int) -> None:
        self.image = MetadataImage(offset=0, cluster_id="c")
        self.proposed: list[Command] = []
        for b in range(brokers):
            self._apply(RegisterBroker(b, "127.0.0.1", 9092 + b, None, f"inc-{b}", node_id=b))

    def _apply(self, cmd: Command) -> int:
        rejection = validate(self.image, cmd)
        if rejection is not None:
            raise CommandRejected(rejection)
        self.image = apply(self.image, cmd, self.image.offset + 1)
        return self.image.offset

    async def read_barrier(self) -> int:
        return self.image.offset

    async def propose(self, cmd: Command) -> int:
        self.proposed.append(cmd)
        return self._apply(cmd)

    async def propose_topic(self, proposal: topics.TopicProposal) -> int:
        """What the Raft leader does: plan on its image, then propose each command."""
        offset = self.image.offset
        for cmd in topics.plan(self.image, proposal.request, proposal.topic_id):
            offset = await self.propose(cmd)
        return offset


class FakeNode:
    ready = True
    shard_count = 0
    slots: Sequence[ShardView] = ()
    pid = 1
    restarts = 0

    async def gather_stats(self) -> dict[int, Stats]:
        return {}


class StartingNode(FakeNode):
    ready = False  # its shards have not all registered yet


def fake_ports(
    metadata: FakeMetadata, node: FakeNode | None = None, security: AdminSecurity | None = None
) -> AdminPorts:
    """The admin API's ports over the fakes: ``metadata`` reads and proposes, no quorum (no route used asks it)."""
    return AdminPorts(
        metadata=metadata,
        proposer=metadata,
        node=node or FakeNode(),
        quorum=None,  # type: ignore[arg-type]
        metrics_dir=Path(tempfile.mkdtemp()),
        data_dir=Path(tempfile.mkdtemp()),
        default_partitions=1,
        default_replication_factor=1,
        security=security or AdminSecurity(),
    )


def _call(
    metadata: FakeMetadata, calls: list[tuple[str, str, str | None]], node: FakeNode | None = None
) -> list[tuple[int, Any]]:
    async def run() -> list[tuple[int, Any]]:
        ports = fake_ports(metadata, node)
        out = []
        async with TestClient(TestServer(build_app(ports))) as client:
            for method, path, body in calls:
                r = await client.request(method, path, data=body)
                out.append((r.status, await r.json()))
        return out

    return asyncio.run(run())


def test_every_route_is_declared_once_and_documented() -> None:
    keys = [(r.method, r.path) for r in ROUTES]
    assert len(set(keys)) == len(keys)
    doc = openapi_document(ROUTES)
    operation_ids = [op["operationId"] for ops in doc["paths"].values() for op in ops.values()]
    assert len(operation_ids) == len(ROUTES) == len(set(operation_ids))
    assert next(iter(doc["paths"]["/v1/topics"]["post"]["responses"])) == "201"
    assert doc["paths"]["/v1/topics/{name}"]["patch"]["requestBody"]["content"]["application/json"]["example"]


def test_topic_requests_through_the_frontend() -> None:
    metadata = FakeMetadata(brokers=1)
    (created, again, unplaceable, shrink, missing, deleted) = _call(
        metadata,
        [
            ("POST", "/v1/topics", '{"name": "t", "partitions": 2}'),
            ("POST", "/v1/topics", '{"name": "t"}'),
            ("POST", "/v1/topics", '{"name": "u", "replication_factor": 2}'),
            ("PATCH", "/v1/topics/t", '{"partitions": 1}'),
            ("PATCH", "/v1/topics/nope", "{}"),
            ("DELETE", "/v1/topics/t", None),
        ],
    )
    assert created == (201, {**created[1], "name": "t", "partitions": 2, "replication_factor": 1})
    assert again[0] == 409 and again[1]["error"] == "conflict" and "field" not in again[1]
    assert unplaceable[0] == 400 and unplaceable[1]["field"] == "replication_factor"
    assert unplaceable[1]["message"].startswith("replication_factor: replication factor 2 is larger than the 1 node")
    assert shrink[0] == 400 and shrink[1]["field"] == "partitions" and shrink[1]["message"].startswith("partitions: ")
    assert missing[0] == 404  # an unknown topic whatever the body says
    assert deleted == (200, {"deleted": "t"})
    assert [type(c).__name__ for c in metadata.proposed] == ["CreateTopic", "DeleteTopic"]  # refusals: nothing


def test_a_node_still_starting_answers_503_where_a_ready_one_would_say_there_are_too_few_brokers() -> None:
    """A single node's first seconds: the admin port serves, its brokers have not registered. Creating a topic then
    is not a wrong request, it is too early: 503 with retry_after_ms. Once ready, too few brokers is a 400."""
    starting = _call(
        FakeMetadata(brokers=0),
        [
            ("POST", "/v1/topics", '{"name": "t"}'),
            ("POST", "/v1/topics", '{"name": "t", "partitions": 0}'),  # wrong whenever it comes
        ],
        node=StartingNode(),
    )
    assert starting[0][0] == 503 and starting[0][1]["error"] == "unavailable"
    assert starting[0][1]["retry_after_ms"] > 0 and "starting" in starting[0][1]["message"]
    assert starting[1][0] == 400
    metadata = FakeMetadata(brokers=1)
    _call(metadata, [("POST", "/v1/topics", '{"name": "t"}')])
    grown = _call(metadata, [("PATCH", "/v1/topics/t", '{"replication_factor": 2}')], node=StartingNode())
    assert grown[0][0] == 503 and grown[0][1]["retry_after_ms"] > 0
    (ready,) = _call(FakeMetadata(brokers=0), [("POST", "/v1/topics", '{"name": "t"}')])
    assert ready[0] == 400 and ready[1]["field"] == "replication_factor"
    assert [c for c in metadata.proposed if type(c).__name__ != "CreateTopic"] == []
