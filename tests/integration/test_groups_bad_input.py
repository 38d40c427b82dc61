"""Bad input to the group coordinator over raw sockets: unknown groups, wrong generations and members, oversized
member metadata, a flood of fresh joins, malformed assignments, commits for unknown partitions. Each gets Kafka's
precise error; the coordinator stays up and another group carries on unaffected."""

from __future__ import annotations

import datetime
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kio.schema.find_coordinator.v2.request import FindCoordinatorRequest
from kio.schema.heartbeat.v3.request import HeartbeatRequest
from kio.schema.join_group.v5.request import JoinGroupRequest, JoinGroupRequestProtocol
from kio.schema.offset_commit.v7.request import (
    OffsetCommitRequest,
    OffsetCommitRequestPartition,
    OffsetCommitRequestTopic,
)
from kio.schema.sync_group.v3.request import SyncGroupRequest, SyncGroupRequestAssignment
from kio.serial import entity_reader

from rafka_shards.model import ErrorCode
from rafka_shards.protocol import kio_codec
from rafka_shards.records.builder import Record, build_batch
from tests.conftest import Broker, running
from tests.integration.helpers import kafka_request, raw_produce, recv_frame

pytestmark = pytest.mark.integration
SESSION = datetime.timedelta(seconds=10)
ARGS = [
    "--group-initial-rebalance-delay-ms",
    "0",
    "--group-max-size",
    "20",
    "--group-member-metadata-max-bytes",
    "1024",
    "--offsets-topic-partitions",
    "4",
]


@pytest.fixture
def node(tmp_path: Path) -> Iterator[Broker]:
    yield from running(Broker(tmp_path / "data", ARGS, shards=2))


def call(port: int, api_key: int, version: int, req: Any) -> Any:
    with socket.create_connection(("127.0.0.1", port), timeout=60) as s:
        s.sendall(kafka_request(api_key, version, req))
        frame = recv_frame(s)
    cls = kio_codec.response_class(api_key, version)
    resp, _ = entity_reader(cls)(frame[4:], 0)
    return resp


def coordinator_port(node: Broker, group: str) -> int:
    deadline = time.monotonic() + 60
    while True:
        resp = call(node.port, 10, 2, FindCoordinatorRequest(key=group))
        if resp.error_code == 0:
            return int(resp.port)
        assert time.monotonic() < deadline, resp
        time.sleep(0.2)


def join(port: int, group: str, member: str = "", metadata: bytes = b"m", session: datetime.timedelta = SESSION) -> Any:
    req = JoinGroupRequest(
        group_id=group,
        session_timeout=session,
        rebalance_timeout=datetime.timedelta(seconds=30),
        member_id=member,
        group_instance_id=None,
        protocol_type="consumer",
        protocols=(JoinGroupRequestProtocol(name="range", metadata=metadata),),
    )
    return call(port, 11, 5, req)


def member_of(port: int, group: str) -> tuple[str, int]:
    """Join ``group`` as its only member and sync: (member id, generation)."""
    first = join(port, group)
    assert first.error_code == ErrorCode.MEMBER_ID_REQUIRED
    joined = join(port, group, first.member_id)
    assert joined.error_code == 0, joined
    sync = SyncGroupRequest(
        group_id=group,
        generation_id=joined.generation_id,
        member_id=joined.member_id,
        group_instance_id=None,
        assignments=(SyncGroupRequestAssignment(member_id=joined.member_id, assignment=b"a"),),
    )
    assert call(port, 14, 3, sync).error_code == 0
    return joined.member_id, int(joined.generation_id)


def heartbeat(port: int, group: str, member: str, generation: int) -> int:
    req = HeartbeatRequest(group_id=group, generation_id=generation, member_id=member, group_instance_id=None)
    return int(call(port, 12, 3, req).error_code)


def commit(port: int, group: str, member: str, generation: int, topic: str, partition: int, meta: str = "") -> int:
    req = OffsetCommitRequest(
        group_id=group,
        generation_id_or_member_epoch=generation,
        member_id=member,
        group_instance_id=None,
        topics=(
            OffsetCommitRequestTopic(
                name=topic,
                partitions=(
                    OffsetCommitRequestPartition(
                        partition_index=partition,
                        committed_offset=1,
                        committed_leader_epoch=-1,
                        committed_metadata=meta,
                    ),
                ),
            ),
        ),
    )
    return int(call(port, 8, 7, req).topics[0].partitions[0].error_code)


def test_wrong_members_generations_and_partitions_get_precise_errors(node: Broker, topic_name: str) -> None:
    raw_produce(node.port, topic_name, build_batch([Record(b"k", b"v", 0)]))  # creates the topic
    port = coordinator_port(node, "g-errors")
    member, generation = member_of(port, "g-errors")
    assert heartbeat(port, "g-errors", member, generation) == ErrorCode.NONE
    assert heartbeat(port, "g-errors", member, generation + 1) == ErrorCode.ILLEGAL_GENERATION
    assert heartbeat(port, "g-errors", "who", generation) == ErrorCode.UNKNOWN_MEMBER_ID
    assert heartbeat(coordinator_port(node, "g-nobody"), "g-nobody", "who", 1) == ErrorCode.UNKNOWN_MEMBER_ID
    assert join(port, "g-errors", "made-up").error_code == ErrorCode.UNKNOWN_MEMBER_ID
    assert join(port, "g-errors", session=datetime.timedelta(seconds=1)).error_code == ErrorCode.INVALID_SESSION_TIMEOUT
    assert join(port, "g-errors", metadata=b"x" * 2048).error_code == ErrorCode.INVALID_REQUEST
    other = node.port if port != node.port else node.port + 1
    assert join(other, "g-errors").error_code == ErrorCode.NOT_COORDINATOR
    assert commit(port, "g-errors", member, generation, topic_name, 0) == ErrorCode.NONE
    assert commit(port, "g-errors", member, generation + 5, topic_name, 0) == ErrorCode.ILLEGAL_GENERATION
    assert commit(port, "g-errors", "who", generation, topic_name, 0) == ErrorCode.UNKNOWN_MEMBER_ID
    assert commit(port, "g-errors", member, generation, "no-such-topic", 0) == ErrorCode.UNKNOWN_TOPIC_OR_PARTITION
    assert commit(port, "g-errors", member, generation, topic_name, 99) == ErrorCode.UNKNOWN_TOPIC_OR_PARTITION
    too_long = "m" * 5000
    assert commit(port, "g-errors", member, generation, topic_name, 0, too_long) == ErrorCode.OFFSET_METADATA_TOO_LARGE
    duplicate = SyncGroupRequest(
        group_id="g-errors",
        generation_id=generation,
        member_id=member,
        group_instance_id=None,
        assignments=(
            SyncGroupRequestAssignment(member_id=member, assignment=b"a"),
            SyncGroupRequestAssignment(member_id=member, assignment=b"b"),
        ),
    )
    assert call(port, 14, 3, duplicate).error_code == ErrorCode.INVALID_REQUEST
    assert call(node.port, 10, 2, FindCoordinatorRequest(key="")).error_code == ErrorCode.INVALID_REQUEST
    txn = call(node.port, 10, 2, FindCoordinatorRequest(key="tx", key_type=1))
    assert txn.error_code == ErrorCode.COORDINATOR_NOT_AVAILABLE
    produced = raw_produce(node.port, "__consumer_offsets", build_batch([Record(b"k", b"v", 0)]))
    assert produced.error_code == ErrorCode.INVALID_TOPIC_EXCEPTION
    assert heartbeat(port, "g-errors", member, generation) == ErrorCode.NONE, "the group is unaffected"


def test_a_flood_of_fresh_joins_is_bounded_and_other_groups_carry_on(node: Broker) -> None:
    port = coordinator_port(node, "g-flood")
    bystander_port = coordinator_port(node, "g-bystander")
    member, generation = member_of(bystander_port, "g-bystander")
    errors = [int(join(port, "g-flood").error_code) for _ in range(100)]
    assert errors.count(ErrorCode.MEMBER_ID_REQUIRED) == 20
    assert errors.count(ErrorCode.GROUP_MAX_SIZE_REACHED) == 80
    assert heartbeat(bystander_port, "g-bystander", member, generation) == ErrorCode.NONE
    assert node.alive()
