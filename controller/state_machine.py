"""The metadata state machine: validate a command against an image, apply it deterministically.

Runs in every process; pure (no I/O, no clock, no randomness: ids are chosen by the proposer and carried in the
command). ``validate`` runs before a command is proposed, so a bad command never enters the log; ``apply`` asserts
what ``validate`` checked, because a command in the log that does not apply means the log or this code is broken.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, replace
from types import MappingProxyType

from controller.commands import (
    AllocateProducerIds,
    AlterTopicConfigs,
    ChangePartition,
    Command,
    CreatePartitions,
    CreateTopic,
    DeleteTopic,
    NoOp,
    RegisterBroker,
)
from controller.image import BrokerRegistration, MetadataImage, PartitionImage, TopicImage
from controller.names import topic_name_error
from controller.topic_config import validate_topic_configs

PARTITIONS_PER_TOPIC_MAX = 100_000
REPLICATION_FACTOR_MAX = 16
PRODUCER_ID_BLOCK_MAX = 1_000_000
PRODUCER_ID_MAX = 2**63 - 1


class RejectKind(enum.Enum):
    INVALID_TOPIC = "invalid_topic"
    TOPIC_ALREADY_EXISTS = "topic_already_exists"
    UNKNOWN_TOPIC = "unknown_topic"
    INVALID_PARTITIONS = "invalid_partitions"
    INVALID_REPLICATION_FACTOR = "invalid_replication_factor"
    INVALID_REPLICA_ASSIGNMENT = "invalid_replica_assignment"
    INVALID_CONFIG = "invalid_config"
    UNKNOWN_BROKER = "unknown_broker"
    STALE_LEADER_EPOCH = "stale_leader_epoch"
    INVALID_REQUEST = "invalid_request"
    # Not about the command: the quorum has no leader, or leadership moved before the command committed. Retry.
    CONTROLLER_UNAVAILABLE = "controller_unavailable"


@dataclass(frozen=True, slots=True)
class Rejection:
    kind: RejectKind
    message: str


class CommandRejected(Exception):
    def __init__(self, rejection: Rejection) -> None:
        super().__init__(rejection.message)
        self.rejection = rejection


def _check_assignments(
    image: MetadataImage, assignments: tuple[tuple[int, ...], ...], rf: int | None
) -> Rejection | None:
    for p, replicas in enumerate(assignments):
        if not replicas:
            return Rejection(RejectKind.INVALID_REPLICA_ASSIGNMENT, f"partition {p} has no replicas")
        if len(set(replicas)) != len(replicas):
            return Rejection(RejectKind.INVALID_REPLICA_ASSIGNMENT, f"partition {p} lists a broker twice: {replicas}")
        if len(replicas) > REPLICATION_FACTOR_MAX:
            return Rejection(
                RejectKind.INVALID_REPLICATION_FACTOR, f"replication factor {len(replicas)} > {REPLICATION_FACTOR_MAX}"
            )
        if rf is not None and len(replicas) != rf:
            return Rejection(
                RejectKind.INVALID_REPLICA_ASSIGNMENT, f"partition {p} has {len(replicas)} replicas, the topic has {rf}"
            )
        unknown = [b for b in replicas if b not in image.brokers]
        if unknown:
            return Rejection(RejectKind.INVALID_REPLICA_ASSIGNMENT, f"partition {p}: unknown broker(s) {unknown}")
    return None


def validate(image: MetadataImage, cmd: Command) -> Rejection | None:
    if isinstance(cmd, NoOp):
        return None
    if isinstance(cmd, RegisterBroker):
        if cmd.broker_id < 0 or not 0 < cmd.port < 65536 or not cmd.host:
            return Rejection(RejectKind.INVALID_REQUEST, f"bad broker registration {cmd}")
        return None
    if isinstance(cmd, CreateTopic):
        err = topic_name_error(cmd.name)
        if err is not None:
            return Rejection(RejectKind.INVALID_TOPIC, err)
        if cmd.name in image.topics:
            return Rejection(RejectKind.TOPIC_ALREADY_EXISTS, f"topic {cmd.name!r} already exists")
        if cmd.topic_id in image.topics_by_id or cmd.topic_id.int == 0:
            return Rejection(RejectKind.INVALID_REQUEST, f"topic id {cmd.topic_id} is taken or zero")
        if not 1 <= len(cmd.assignments) <= PARTITIONS_PER_TOPIC_MAX:
            return Rejection(
                RejectKind.INVALID_PARTITIONS,
                f"number of partitions must be in 1..{PARTITIONS_PER_TOPIC_MAX}, got {len(cmd.assignments)}",
            )
        rejection = _check_assignments(image, cmd.assignments, len(cmd.assignments[0]))
        if rejection is not None:
            return rejection
        configs = dict(cmd.configs)
        if len(configs) != len(cmd.configs):
            return Rejection(RejectKind.INVALID_CONFIG, "a config key is given twice")
        problem = validate_topic_configs(configs)
        return None if problem is None else Rejection(RejectKind.INVALID_CONFIG, problem)
    if isinstance(cmd, CreatePartitions):
        topic = image.topics.get(cmd.name)
        if topic is None:
            return Rejection(RejectKind.UNKNOWN_TOPIC, f"topic {cmd.name!r} does not exist")
        total = len(topic.partitions) + len(cmd.new_assignments)
        if not cmd.new_assignments or total > PARTITIONS_PER_TOPIC_MAX:
            return Rejection(RejectKind.INVALID_PARTITIONS, f"cannot grow {cmd.name!r} to {total} partitions")
        return _check_assignments(image, cmd.new_assignments, len(topic.partitions[0].replicas))
    if isinstance(cmd, DeleteTopic):
        if cmd.name not in image.topics:
            return Rejection(RejectKind.UNKNOWN_TOPIC, f"topic {cmd.name!r} does not exist")
        return None
    if isinstance(cmd, ChangePartition):
        topic = image.topics.get(cmd.topic)
        if topic is None or not 0 <= cmd.partition < len(topic.partitions):
            return Rejection(RejectKind.UNKNOWN_TOPIC, f"{cmd.topic}-{cmd.partition} does not exist")
        p = topic.partitions[cmd.partition]
        if not set(cmd.isr) <= set(p.replicas) or len(set(cmd.isr)) != len(cmd.isr):
            return Rejection(RejectKind.INVALID_REQUEST, f"ISR {cmd.isr} is not a set of replicas {p.replicas}")
        if cmd.leader != -1 and cmd.leader not in cmd.isr:
            return Rejection(RejectKind.INVALID_REQUEST, f"leader {cmd.leader} is not in the ISR {cmd.isr}")
        if cmd.leader_epoch < p.leader_epoch or (cmd.leader != p.leader and cmd.leader_epoch == p.leader_epoch):
            return Rejection(
                RejectKind.STALE_LEADER_EPOCH, f"leader epoch {cmd.leader_epoch} does not move past {p.leader_epoch}"
            )
        return None
    if isinstance(cmd, AllocateProducerIds):
        if cmd.broker_id not in image.brokers:
            return Rejection(RejectKind.UNKNOWN_BROKER, f"broker {cmd.broker_id} is not registered")
        if not 1 <= cmd.count <= PRODUCER_ID_BLOCK_MAX:
            return Rejection(
                RejectKind.INVALID_REQUEST, f"producer id block size {cmd.count} not in 1..{PRODUCER_ID_BLOCK_MAX}"
            )
        if image.next_producer_id + cmd.count > PRODUCER_ID_MAX:
            return Rejection(RejectKind.INVALID_REQUEST, "producer ids exhausted")
        return None
    assert isinstance(cmd, AlterTopicConfigs)
    topic = image.topics.get(cmd.name)
    if topic is None:
        return Rejection(RejectKind.UNKNOWN_TOPIC, f"topic {cmd.name!r} does not exist")
    merged = {k: v for k, v in topic.configs.items() if k not in cmd.delete_configs}
    merged.update(cmd.set_configs)
    problem = validate_topic_configs(merged)
    return None if problem is None else Rejection(RejectKind.INVALID_CONFIG, problem)


def _partition(index: int, replicas: tuple[int, ...]) -> PartitionImage:
    return PartitionImage(index, replicas, replicas, replicas[0], 0, 0)


def _with_topic(image: MetadataImage, topic: TopicImage, offset: int) -> MetadataImage:
    topics = dict(image.topics)
    topics[topic.name] = topic
    by_id = dict(image.topics_by_id)
    by_id[topic.topic_id] = topic.name
    return replace(image, offset=offset, topics=MappingProxyType(topics), topics_by_id=MappingProxyType(by_id))


def apply(image: MetadataImage, cmd: Command, offset: int) -> MetadataImage:
    rejection = validate(image, cmd)
    assert rejection is None, f"command at offset {offset} does not apply: {rejection}"
    if isinstance(cmd, NoOp):
        return replace(image, offset=offset)
    if isinstance(cmd, RegisterBroker):
        brokers: dict[int, BrokerRegistration] = dict(image.brokers)
        brokers[cmd.broker_id] = BrokerRegistration(cmd.broker_id, cmd.host, cmd.port, cmd.rack, cmd.incarnation)
        return replace(image, offset=offset, brokers=MappingProxyType(brokers))
    if isinstance(cmd, CreateTopic):
        partitions = tuple(_partition(i, r) for i, r in enumerate(cmd.assignments))
        configs: Mapping[str, str] = MappingProxyType(dict(cmd.configs))
        return _with_topic(image, TopicImage(cmd.name, cmd.topic_id, partitions, configs), offset)
    if isinstance(cmd, CreatePartitions):
        topic = image.topics[cmd.name]
        start = len(topic.partitions)
        added = tuple(_partition(start + i, r) for i, r in enumerate(cmd.new_assignments))
        return _with_topic(image, replace(topic, partitions=topic.partitions + added), offset)
    if isinstance(cmd, DeleteTopic):
        topic = image.topics[cmd.name]
        topics = {k: v for k, v in image.topics.items() if k != cmd.name}
        by_id = {k: v for k, v in image.topics_by_id.items() if k != topic.topic_id}
        return replace(image, offset=offset, topics=MappingProxyType(topics), topics_by_id=MappingProxyType(by_id))
    if isinstance(cmd, ChangePartition):
        topic = image.topics[cmd.topic]
        old = topic.partitions[cmd.partition]
        new = replace(
            old, leader=cmd.leader, isr=cmd.isr, leader_epoch=cmd.leader_epoch, partition_epoch=old.partition_epoch + 1
        )
        parts = list(topic.partitions)
        parts[cmd.partition] = new
        return _with_topic(image, replace(topic, partitions=tuple(parts)), offset)
    if isinstance(cmd, AllocateProducerIds):
        start = image.next_producer_id
        blocks = dict(image.producer_id_blocks)
        blocks[cmd.broker_id] = (start, start + cmd.count)
        return replace(
            image, offset=offset, next_producer_id=start + cmd.count, producer_id_blocks=MappingProxyType(blocks)
        )
    topic = image.topics[cmd.name]
    merged = {k: v for k, v in topic.configs.items() if k not in cmd.delete_configs}
    merged.update(cmd.set_configs)
    return _with_topic(image, replace(topic, configs=MappingProxyType(merged)), offset)
