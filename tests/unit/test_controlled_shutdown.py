"""The decisions of a controlled shutdown (controller/controlled_shutdown.py): which brokers a stopping node puts in
maintenance, when their leadership has moved, which voter gets the Raft leadership, and which maintenance the node
ends when it is back."""

from __future__ import annotations

import uuid
from dataclasses import replace
from types import MappingProxyType

import pytest

from controller.commands import SetBrokerMaintenance
from controller.controlled_shutdown import (
    DrainPlan,
    brokers_to_restore,
    decode_marker,
    encode_marker,
    leaders_to_move,
    plan_drain,
    transfer_target,
)
from controller.image import BrokerRegistration, MetadataImage, PartitionImage, TopicImage
from controller.raft.node import PeerStatus, Role, Status
from controller.raft.types import ConfState, Index, NodeId, Term
from controller.state_machine import apply


def _broker(broker_id: int, **flags: bool) -> BrokerRegistration:
    return BrokerRegistration(broker_id, "127.0.0.1", 9092 + broker_id, None, "inc", node_id=broker_id // 10, **flags)


def _image(brokers: list[BrokerRegistration], *partitions: PartitionImage) -> MetadataImage:
    topic = TopicImage("t", uuid.uuid4(), partitions, MappingProxyType({}))
    return MetadataImage(
        offset=5,
        cluster_id="c",
        brokers=MappingProxyType({b.broker_id: b for b in brokers}),
        topics=MappingProxyType({"t": topic}),
    )


def _p(index: int, replicas: tuple[int, ...], isr: tuple[int, ...], leader: int) -> PartitionImage:
    return PartitionImage(index, replicas, isr, leader, 1, 1)


THREE = [_broker(0), _broker(10), _broker(20)]  # three nodes of one shard each


def test_a_node_of_a_cluster_puts_its_usable_brokers_in_maintenance() -> None:
    image = _image(THREE, _p(0, (0, 10, 20), (0, 10, 20), 0))
    assert plan_drain(image, [0]) == DrainPlan((0,))


def test_a_single_node_cluster_skips_the_drain() -> None:
    image = _image([_broker(0), _broker(1)], _p(0, (0, 1), (0, 1), 0))  # two shards of one node
    plan = plan_drain(image, [0, 1])
    assert plan.brokers == () and plan.skipped is not None and "another node" in plan.skipped


def test_no_drain_when_every_other_node_is_fenced_or_in_maintenance() -> None:
    image = _image([_broker(0), _broker(10, fenced=True), _broker(20, maintenance=True)])
    assert plan_drain(image, [0]).brokers == ()


def test_brokers_an_operator_put_in_maintenance_are_not_the_shutdowns() -> None:
    image = _image([_broker(0, maintenance=True), _broker(1), _broker(10), _broker(2, fenced=True)])
    # broker 0 is the operator's (not recorded, so not ended on restart); broker 2 is fenced: it leads nothing
    assert plan_drain(image, [0, 1, 2]) == DrainPlan((1,))
    only_operators = plan_drain(image, [0])
    assert only_operators.brokers == () and only_operators.skipped is not None


def test_maintenance_moves_every_movable_leader_and_leaders_to_move_sees_it() -> None:
    image = _image(
        THREE,
        _p(0, (0, 10, 20), (0, 10, 20), 0),
        _p(1, (0, 10, 20), (0, 20), 0),
        _p(2, (10, 0, 20), (10, 0, 20), 10),  # not led by the stopping node
        _p(3, (0, 10), (0,), 0),  # its only in-sync replica is the stopping node: it keeps its leader
    )
    assert leaders_to_move(image, [0]) == 2
    after = apply(image, SetBrokerMaintenance(0, True), 6)
    assert leaders_to_move(after, [0]) == 0
    leaders = [p.leader for p in after.topics["t"].partitions]
    assert leaders == [10, 20, 10, 0]


def test_a_leader_whose_other_in_sync_replicas_are_unusable_is_not_counted() -> None:
    image = _image(
        [_broker(0), _broker(10, fenced=True), _broker(20, maintenance=True)], _p(0, (0, 10, 20), (0, 10, 20), 0)
    )
    assert leaders_to_move(image, [0]) == 0


def _status(role: Role, peers: dict[int, int], voters: set[int], node: int = 1) -> Status:
    return Status(
        NodeId(node),
        role,
        Term(3),
        NodeId(node if role == Role.LEADER else 2),
        Index(10),
        Index(10),
        Index(12),
        Index(0),
        ConfState(frozenset(NodeId(v) for v in voters)),
        tuple(PeerStatus(NodeId(n), Index(m), Index(m + 1), "replicate") for n, m in peers.items()),
    )


def test_raft_leadership_goes_to_the_most_caught_up_other_voter() -> None:
    assert transfer_target(_status(Role.LEADER, {2: 9, 3: 12}, {1, 2, 3})) == 3
    assert transfer_target(_status(Role.LEADER, {2: 12, 3: 12}, {1, 2, 3})) == 2  # a tie: the lowest id
    assert transfer_target(_status(Role.LEADER, {2: 12, 4: 12}, {1, 2, 3})) == 2  # 4 is a learner


def test_no_raft_transfer_by_a_follower_or_a_lone_voter() -> None:
    assert transfer_target(_status(Role.FOLLOWER, {}, {1, 2, 3})) is None
    assert transfer_target(_status(Role.LEADER, {}, {1})) is None
    assert transfer_target(_status(Role.LEADER, {4: 12}, {1})) is None


def test_the_marker_round_trips_and_refuses_what_it_did_not_write() -> None:
    assert decode_marker(encode_marker([20, 1, 20])) == (1, 20)
    for bad in (b"[]", b'{"version": 2, "brokers": []}', b'{"version": 1, "brokers": [true]}', b"x" * 70_000):
        with pytest.raises(ValueError):
            decode_marker(bad)


def test_only_marked_brokers_still_in_maintenance_are_restored() -> None:
    image = _image([_broker(0, maintenance=True), _broker(1), _broker(2, maintenance=True)])
    # 1: an operator ended its maintenance meanwhile; 2: the operator's own (not marked); 7: not registered
    assert brokers_to_restore(image, (0, 1, 7)) == (0,)
    assert brokers_to_restore(replace(image, brokers=MappingProxyType({})), (0,)) == ()
