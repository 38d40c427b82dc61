"""The metadata controller's parts: commands, state machine, image codec, metadata log, the controller channel codec,
and the node's Raft controller with one voter."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import uuid
from pathlib import Path

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from controller import topics
from controller.commands import (
    AllocateProducerIds,
    AlterPartition,
    AlterTopicConfigs,
    ChangePartition,
    Command,
    CommandDecodeError,
    CreatePartitions,
    CreateTopic,
    DecommissionBroker,
    DeleteTopic,
    FenceBroker,
    ReassignPartition,
    RegisterBroker,
    SetBrokerMaintenance,
    UnfenceBroker,
    decode_command,
    encode_command,
)
from controller.image import MetadataImage, decode_image, encode_image
from controller.metadata_log import MetadataLog
from controller.state_machine import CommandRejected, RejectKind, apply
from rafka_shards.config import BrokerConfig
from rafka_shards.controller_node.raft_controller import RaftController
from rafka_shards.ipc.channel import (
    FRAME_BYTES_MAX,
    Applied,
    ChannelDecoder,
    ChannelError,
    Heartbeat,
    HeartbeatAck,
    Hello,
    Image,
    Message,
    PartitionStats,
    Propose,
    Proposed,
    ProposeTopic,
    Ready,
    Records,
    Rejected,
    Stats,
    StatsRequest,
    encode,
    encode_records,
)

TOPIC_ID = uuid.UUID("6f1c9c1e-8a8f-4c52-9a57-0d8b2b1f6a01")
COMMANDS: list[Command] = [
    RegisterBroker(0, "127.0.0.1", 9092, "node-a", "inc-1", node_id=7),
    RegisterBroker(1, "127.0.0.1", 9093, None, "inc-2"),
    CreateTopic("orders", TOPIC_ID, ((0,), (1,), (0,)), (("retention.ms", "1000"),)),
    CreatePartitions("orders", ((1,),)),
    ChangePartition("orders", 0, 0, (0,), 1),
    AlterPartition("orders", 0, 0, 1, 1, (0,)),
    AlterTopicConfigs("orders", (("segment.bytes", "1048576"),), ("retention.ms",)),
    AllocateProducerIds(1, 1000),
    ReassignPartition("orders", 0, (0, 1)),
    SetBrokerMaintenance(1, True),
    FenceBroker(0, "inc-1"),
    UnfenceBroker(0, "inc-1"),
    DecommissionBroker(1),
    DeleteTopic("orders"),
]


@pytest.mark.parametrize("cmd", COMMANDS, ids=lambda c: type(c).__name__)
def test_commands_round_trip(cmd: Command) -> None:
    assert decode_command(encode_command(cmd)) == cmd


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"[]",
        b'{"v": 2, "type": "DeleteTopic", "name": "x"}',
        b'{"v": 1, "type": "Nope"}',
        b'{"v": 1, "type": "DeleteTopic"}',
        b'{"v": 1, "type": "DeleteTopic", "name": "x", "extra": 1}',
        b'{"v": 1, "type": "AllocateProducerIds", "broker_id": true, "count": 1}',
        b'{"v": 1, "type": "RegisterBroker", "broker_id": 1, "host": "h", "port": 1, "rack": null, "incarnation": "i",'
        b' "node_id": "one"}',
    ],
)
def test_bad_commands_are_refused(data: bytes) -> None:
    with pytest.raises(CommandDecodeError):
        decode_command(data)


def test_a_registration_written_before_node_ids_decodes_as_a_node_of_its_own() -> None:
    old = (
        b'{"v": 1, "type": "RegisterBroker", "broker_id": 3, "host": "h", "port": 1, "rack": null, "incarnation": "i"}'
    )
    cmd = decode_command(old)
    assert cmd == RegisterBroker(3, "h", 1, None, "i", node_id=None)
    image = apply(MetadataImage(offset=0, cluster_id="c"), cmd, 1)
    assert image.brokers[3].node == -4


def _image(commands: list[Command]) -> MetadataImage:
    image = MetadataImage(offset=0, cluster_id="cluster-1")
    for i, cmd in enumerate(commands):
        image = apply(image, cmd, i + 1)
    return image


def test_image_codec_round_trips() -> None:
    image = _image(COMMANDS[:-1])
    assert decode_image(encode_image(image)) == image
    assert image.brokers[1].maintenance and image.brokers[1].decommissioning and not image.brokers[0].fenced
    assert image.topics["orders"].configs == {"segment.bytes": "1048576"}
    assert image.brokers[0].node_id == 7 and image.brokers[1].node_id is None
    assert (image.brokers[0].epoch, image.brokers[1].epoch) == (1, 2)  # the offsets of their RegisterBroker records


def test_an_image_written_before_broker_epochs_decodes_with_epoch_unknown() -> None:
    body = orjson.loads(encode_image(_image(COMMANDS[:2])))
    body["brokers"] = [b[:9] for b in body["brokers"]]
    image = decode_image(orjson.dumps(body))
    assert image.brokers[0].epoch == -1 and image.brokers[0].node_id == 7


async def _open_controller(tmp_path: Path, **settings: int) -> RaftController:
    config = BrokerConfig(data_dir=tmp_path, raft_election_timeout_ms=300, raft_heartbeat_interval_ms=50, **settings)
    controller = await RaftController.open(config)
    await controller.start()
    await asyncio.wait_for(controller.wait_caught_up(), 10)
    return controller


def test_producer_id_blocks_are_unique_across_brokers_and_restarts(tmp_path: Path) -> None:
    asyncio.run(_producer_id_blocks(tmp_path))


async def _producer_id_blocks(tmp_path: Path) -> None:
    c = await _open_controller(tmp_path)
    await c.propose(COMMANDS[0])
    await c.propose(COMMANDS[1])
    blocks = []
    for broker in (0, 1, 0):
        await c.propose(AllocateProducerIds(broker, 1000))
        blocks.append(c.image.producer_id_blocks[broker])
    await c.close()
    reopened = await _open_controller(tmp_path)  # the log replays to the same state: no block is handed out twice
    await reopened.propose(AllocateProducerIds(1, 10))
    blocks.append(reopened.image.producer_id_blocks[1])
    assert blocks == [(0, 1000), (1000, 2000), (2000, 3000), (3000, 3010)]
    with pytest.raises(CommandRejected) as e:
        await reopened.propose(AllocateProducerIds(7, 10))
    assert e.value.rejection.kind is RejectKind.UNKNOWN_BROKER
    await reopened.close()


def test_concurrent_proposals_are_validated_in_log_order(tmp_path: Path) -> None:
    """Two creates of one topic in flight at once: the second is refused before it enters the log."""
    asyncio.run(_concurrent_creates(tmp_path))


async def _concurrent_creates(tmp_path: Path) -> None:
    c = await _open_controller(tmp_path)
    await c.propose(COMMANDS[0])
    await c.propose(COMMANDS[1])
    results = await asyncio.gather(
        c.propose(COMMANDS[2]), c.propose(CreateTopic("orders", uuid.uuid4(), ((0,),), ())), return_exceptions=True
    )
    assert isinstance(results[0], int)
    assert isinstance(results[1], CommandRejected) and results[1].rejection.kind is RejectKind.TOPIC_ALREADY_EXISTS
    assert c.image.topics["orders"].topic_id == TOPIC_ID
    await c.close()


def test_metadata_log_cuts_a_torn_tail(tmp_path: Path) -> None:
    """The pre-Raft metadata log, still read once to upgrade a data directory."""
    log = MetadataLog.open(tmp_path)
    for cmd in COMMANDS[:3]:
        log.append(cmd)
    log.close()
    log_file = tmp_path / "metadata.log"
    good = log_file.stat().st_size
    with log_file.open("ab") as f:
        f.write(b"\x00\x00\x01\x00garbage")  # a crash in the middle of an append
    reopened = MetadataLog.open(tmp_path)
    assert len(reopened) == 3
    assert log_file.stat().st_size == good
    assert reopened.payloads(1, 10) == [encode_command(c) for c in COMMANDS[1:3]]


MESSAGES: list[Message] = [
    Hello(41, _image(COMMANDS[:4])),
    Image(_image(COMMANDS[:6])),
    Records(7, tuple(COMMANDS)),
    Proposed(3, 9),
    Rejected(4, "topic_already_exists", "topic 'orders' already exists"),
    StatsRequest(5),
    Propose(6, COMMANDS[2]),
    ProposeTopic(7, topics.TopicProposal(topics.NewTopic("t", 3, 2, {"cleanup.policy": "delete"}), TOPIC_ID)),
    ProposeTopic(8, topics.TopicProposal(topics.NewPartitions("t", 5, ((0, 1), (1, 0))), TOPIC_ID, True)),
    ProposeTopic(9, topics.TopicProposal(topics.AlterTopic("t", topics.TopicChanges(4, 3, {}, ("a",))), TOPIC_ID)),
    ProposeTopic(10, topics.TopicProposal(topics.RemoveTopic("t"), TOPIC_ID)),
    Rejected(11, "invalid_replication_factor", "replication factor 4 is larger", "replication_factor"),
    Applied(12),
    Ready(3, 9095),
    Heartbeat(10, 3, "inc-3", 42),
    HeartbeatAck(10, "fenced", "lease expired"),
    Stats(8, 2, (PartitionStats("orders", 1, 0, 10, 12, 4096),)),
    Stats(9, 0, ()),
]


def test_channel_messages_round_trip_in_any_chunking() -> None:
    wire = b"".join(encode(m) for m in MESSAGES)
    for chunk in (1, 7, 100, len(wire)):
        decoder = ChannelDecoder()
        out: list[Message] = []
        for i in range(0, len(wire), chunk):
            out.extend(decoder.feed(wire[i : i + chunk]))
        assert out == MESSAGES


def test_records_frame_embeds_log_payloads_verbatim() -> None:
    payloads = [encode_command(c) for c in COMMANDS]
    assert ChannelDecoder().feed(encode_records(3, payloads)) == [Records(3, tuple(COMMANDS))]


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b'{"t": "applied"}',
        b'{"t": "applied", "offset": "1"}',
        b'{"t": "what"}',
        b'{"t": "records", "first": 0, "commands": [{"v": 1, "type": "Nope"}]}',
        b'{"t": "stats", "id": 1, "connections": 0, "partitions": [["t", 0, 0]]}',
        b'{"t": "heartbeat_ack", "id": 1, "status": "maybe", "message": ""}',
        b'{"t": "heartbeat", "id": 1, "broker_id": 0, "incarnation": 7, "offset": 3}',
    ],
)
def test_channel_refuses_malformed_messages(body: bytes) -> None:
    with pytest.raises(ChannelError):
        ChannelDecoder().feed(len(body).to_bytes(4, "big") + body)


def test_channel_refuses_oversized_frames_before_buffering_them() -> None:
    with pytest.raises(ChannelError, match="exceeds"):
        ChannelDecoder().feed((FRAME_BYTES_MAX + 1).to_bytes(4, "big"))


@given(st.binary(max_size=200))
def test_channel_decoder_never_crashes_on_garbage(data: bytes) -> None:
    with contextlib.suppress(ChannelError):
        ChannelDecoder(frame_bytes_max=1024).feed(data)


def test_a_failed_controller_loop_stops_the_node(tmp_path: Path) -> None:
    """A Ready loop that failed (here: the disk) leaves a controller that neither persists nor applies: it must say
    so to the supervisor (which stops the node with exit 1), not fail silently in a task nobody awaits."""

    async def run() -> str:
        controller = await _open_controller(tmp_path)
        reasons: list[str] = []
        controller.on_fatal = reasons.append

        def broken_disk(_ready: object) -> None:
            raise OSError(5, "Input/output error")

        controller.storage.save = broken_disk  # type: ignore[method-assign]
        with contextlib.suppress(CommandRejected, TimeoutError):
            await asyncio.wait_for(controller.propose(RegisterBroker(0, "127.0.0.1", 9092, None, "inc")), 1)
        await controller.close()
        return reasons[0]

    assert "raft-ready" in asyncio.run(run())


def test_reads_on_any_node_see_every_acknowledged_write(tmp_path: Path) -> None:
    """ReadIndex: after ``read_barrier`` a node's image holds everything the leader had committed when the read
    began, whichever node took the write; a follower asks the leader for that index."""
    asyncio.run(_reads_are_linearizable(tmp_path))


async def _three_controllers(tmp_path: Path, **settings: int) -> list[RaftController]:
    """Three in-process controllers forming one quorum over loopback, caught up with each other."""
    from tests.conftest import free_port_range

    base = free_port_range(3)
    voters = ",".join(f"{n}@127.0.0.1:{base + n - 1}" for n in (1, 2, 3))
    controllers = []
    for n in (1, 2, 3):
        config = BrokerConfig(
            data_dir=tmp_path / str(n),
            node_id=n,
            controller_voters=voters,
            raft_election_timeout_ms=300,
            raft_heartbeat_interval_ms=50,
            **settings,
        )
        c = await RaftController.open(config)
        await c.start()
        controllers.append(c)
    await asyncio.wait_for(asyncio.gather(*(c.wait_caught_up() for c in controllers)), 20)
    return controllers


async def _reads_are_linearizable(tmp_path: Path) -> None:
    controllers = await _three_controllers(tmp_path)
    try:
        leader = next(c for c in controllers if c.node.role.value == "leader")
        followers = [c for c in controllers if c is not leader]
        await followers[0].propose(COMMANDS[0])
        await followers[0].propose(COMMANDS[1])
        for i in range(30):
            writer, reader = (followers[i % 2], followers[(i + 1) % 2]) if i % 3 else (followers[0], leader)
            offset = await writer.propose(AllocateProducerIds(i % 2, 10))
            committed = leader.node.commit
            index = await reader.read_barrier()
            assert index >= committed >= offset
            assert reader.image.offset >= index
            assert reader.image.producer_id_blocks[i % 2] == writer.image.producer_id_blocks[i % 2]
    finally:
        for c in controllers:
            await c.close()


def test_topic_requests_are_planned_on_the_leaders_newest_image(tmp_path: Path) -> None:
    """Topic requests sent through followers are placed by the Raft leader on its speculative image: creates in flight
    at once are balanced against each other (planned on one stale image they would all pick the same broker), and a
    refusal comes back through forwarding with the request field at fault."""
    asyncio.run(_topics_planned_on_the_leader(tmp_path))


async def _topics_planned_on_the_leader(tmp_path: Path) -> None:
    # No broker heartbeats here: the brokers keep their leases for the whole test.
    controllers = await _three_controllers(tmp_path, broker_session_timeout_ms=600_000)
    listeners = [socket.create_server(("127.0.0.1", 0)) for _ in range(3)]  # brokers the liveness probe finds alive
    try:
        leader = next(c for c in controllers if c.node.role.value == "leader")
        followers = [c for c in controllers if c is not leader]
        for b, sock in enumerate(listeners):
            port = sock.getsockname()[1]
            await leader.propose(RegisterBroker(b, "127.0.0.1", port, None, f"inc-{b}", node_id=b))

        def create(i: int, validate_only: bool = False) -> topics.TopicProposal:
            return topics.TopicProposal(topics.NewTopic(f"t{i}", 1, 1, {}), uuid.uuid4(), validate_only)

        checked = await followers[0].propose_topic(create(9, validate_only=True))
        assert "t9" not in leader.image.topics and checked <= leader.image.offset
        await asyncio.gather(*(followers[i % 2].propose_topic(create(i)) for i in range(3)))
        image = followers[0].image
        assert sorted(image.topics[f"t{i}"].partitions[0].replicas[0] for i in range(3)) == [0, 1, 2]
        with pytest.raises(topics.TopicRejected) as e:
            await followers[1].propose_topic(topics.TopicProposal(topics.NewTopic("big", 1, 4, {}), uuid.uuid4()))
        assert (e.value.rejection.kind, e.value.field) == (RejectKind.INVALID_REPLICATION_FACTOR, "replication_factor")
        changes = topics.TopicChanges(3, None, {"retention.ms": "5"}, ())
        await followers[1].propose_topic(topics.TopicProposal(topics.AlterTopic("t0", changes), uuid.uuid4()))
        t0 = followers[1].image.topics["t0"]
        assert len(t0.partitions) == 3 and dict(t0.configs)["retention.ms"] == "5"
        await followers[0].propose_topic(topics.TopicProposal(topics.RemoveTopic("t1"), uuid.uuid4()))
        assert "t1" not in followers[0].image.topics
    finally:
        for sock in listeners:
            sock.close()
        for c in controllers:
            await c.close()


def test_the_active_controller_fences_a_dead_shard_at_once_and_a_broker_whose_port_refuses(tmp_path: Path) -> None:
    """The two fast paths of fail-over, through a real one-node controller: the supervisor's report of a dead shard
    (``broker_died``), and the liveness probe finding nothing listening on a broker's port (its node is gone). A
    broker whose listener accepts but never answers (paused) is left to its session."""

    async def run() -> None:
        controller = await _open_controller(tmp_path, broker_probe_timeout_ms=100, broker_probe_interval_ms=50)
        quiet = socket.socket()  # listens, never answers: probes time out
        quiet.bind(("127.0.0.1", 0))
        quiet.listen(8)
        gone = socket.socket()  # bound and closed: a port nothing listens on
        gone.bind(("127.0.0.1", 0))
        gone_port = gone.getsockname()[1]
        gone.close()
        try:
            await controller.propose(RegisterBroker(0, "127.0.0.1", quiet.getsockname()[1], None, "a"))
            await controller.propose(RegisterBroker(1, "127.0.0.1", quiet.getsockname()[1], None, "b"))
            await controller.propose(RegisterBroker(2, "127.0.0.1", gone_port, None, "c"))
            controller.broker_died(1, "exited (killed by SIGKILL)")
            while not (controller.image.brokers[1].fenced and controller.image.brokers[2].fenced):
                await asyncio.sleep(0.02)
            await asyncio.sleep(0.5)  # several probe timeouts
            assert not controller.image.brokers[0].fenced
        finally:
            quiet.close()
            await controller.close()

    asyncio.run(asyncio.wait_for(run(), 30))
