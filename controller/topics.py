"""The topics frontend: a request to create, grow, change or delete a topic becomes metadata commands, replicas placed.

Runs on the Raft leader, in the controller process: the edges (a shard's Kafka CreateTopics, CreatePartitions,
DeleteTopics, AlterConfigs and auto creation; the admin API's ``/v1/topics``) send a ``TopicProposal`` there (a
follower forwards it), and the leader plans it on its speculative image (the applied image plus its proposals in
flight), so replicas are placed on the newest state there is and two creates in flight at once are balanced against
each other. Pure: the image is given, and so is a new topic's id, so the same request on the same image gives the
same commands. Each command is validated again as it is proposed (``state_machine.validate``). Every refusal is one
``TopicRejected``: the state machine's ``RejectKind`` (which each edge maps to its Kafka error code or HTTP status)
plus the request field at fault, where there is one.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass

from controller.commands import (
    AlterTopicConfigs,
    Command,
    CreatePartitions,
    CreateTopic,
    DeleteTopic,
    ReassignPartition,
)
from controller.image import MetadataImage, TopicImage
from controller.names import topic_name_error
from controller.placement import grow_replicas, place_partitions
from controller.state_machine import (
    PARTITIONS_PER_TOPIC_MAX,
    CommandRejected,
    Rejection,
    RejectKind,
    apply,
    validate,
)

Assignments = tuple[tuple[int, ...], ...]  # replicas of each partition, preferred leader first


class TopicRejected(CommandRejected):
    """A topic request that cannot be carried out on this image: nothing is proposed. ``field`` names the request
    field at fault (``"partitions"``, ``"replication_factor"``) when one is."""

    def __init__(self, kind: RejectKind, message: str, field: str | None = None) -> None:
        super().__init__(Rejection(kind, message))
        self.field = field


@dataclass(frozen=True, slots=True)
class NewTopic:
    """Create ``name``: ``partitions`` partitions of ``replication_factor`` replicas placed here, or exactly the
    replicas of ``assignments`` when given (then the two counts are not looked at)."""

    name: str
    partitions: int
    replication_factor: int
    configs: Mapping[str, str]
    assignments: Assignments | None = None


@dataclass(frozen=True, slots=True)
class TopicChanges:
    """Changes to an existing topic, each optional: a larger partition count, a new replication factor, configs to
    set and configs to delete."""

    partitions: int | None
    replication_factor: int | None
    set_configs: Mapping[str, str]
    delete_configs: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class NewPartitions:
    """Grow ``name`` to ``count`` partitions, the new ones placed here or given by ``assignments``."""

    name: str
    count: int
    assignments: Assignments | None = None


@dataclass(frozen=True, slots=True)
class AlterTopic:
    name: str
    changes: TopicChanges


@dataclass(frozen=True, slots=True)
class RemoveTopic:
    name: str


TopicRequest = NewTopic | NewPartitions | AlterTopic | RemoveTopic


@dataclass(frozen=True, slots=True)
class TopicProposal:
    """A topic request as the edges send it to the Raft leader, which plans it (``plan``) on its newest image.

    ``topic_id`` is the id a new topic gets, chosen by the requester so that the request means the same wherever it
    is planned; ``validate_only`` asks for the checks and the placement without proposing anything (Kafka's
    ``validate_only``)."""

    request: TopicRequest
    topic_id: uuid.UUID
    validate_only: bool = False


def plan(image: MetadataImage, request: TopicRequest, topic_id: uuid.UUID) -> tuple[Command, ...]:
    """The commands that carry out ``request`` on ``image``, in the order to propose them (``topic_id``: the id a
    new topic gets). One entry point for any topic request, for a caller that takes requests of every kind (the
    controller leader, placing replicas on its newest image)."""
    if isinstance(request, NewTopic):
        return (create_topic(image, request, topic_id),)
    if isinstance(request, NewPartitions):
        return (create_partitions(image, request.name, request.count, request.assignments),)
    if isinstance(request, AlterTopic):
        return alter_topic(image, request.name, request.changes)
    return (delete_topic(image, request.name),)


def check(image: MetadataImage, commands: tuple[Command, ...]) -> None:
    """Raise the TopicRejected the first of ``commands`` that would not validate gets when they are proposed in order
    on ``image`` (each checked on the image the ones before it make): what ``validate_only`` answers."""
    for cmd in commands:
        rejection = validate(image, cmd)
        if rejection is not None:
            raise TopicRejected(rejection.kind, rejection.message)
        image = apply(image, cmd, image.offset + 1)


def _topic(image: MetadataImage, name: str) -> TopicImage:
    topic = image.topics.get(name)
    if topic is None:
        raise TopicRejected(RejectKind.UNKNOWN_TOPIC, f"topic {name!r} does not exist")
    return topic


def _place(image: MetadataImage, partitions: int, rf: int, start: int, field: str) -> Assignments:
    try:
        return place_partitions(image, partitions, rf, start)
    except ValueError as e:
        raise TopicRejected(RejectKind.INVALID_REPLICATION_FACTOR, str(e), field) from None


def create_topic(image: MetadataImage, req: NewTopic, topic_id: uuid.UUID) -> CreateTopic:
    """The CreateTopic command for ``req`` with id ``topic_id``. Checked here: the name, that the topic does not
    exist, the counts and that placement can satisfy them; the rest (configs, given assignments) by ``validate``
    where the command is proposed."""
    err = topic_name_error(req.name)
    if err is not None:
        raise TopicRejected(RejectKind.INVALID_TOPIC, err, "name")
    if req.name in image.topics:
        raise TopicRejected(RejectKind.TOPIC_ALREADY_EXISTS, f"topic {req.name!r} already exists")
    assignments = req.assignments
    if assignments is None:
        if req.partitions < 1:
            raise TopicRejected(
                RejectKind.INVALID_PARTITIONS, f"number of partitions must be >= 1, got {req.partitions}", "partitions"
            )
        if req.partitions > PARTITIONS_PER_TOPIC_MAX:  # refused before placement loops over them
            raise TopicRejected(
                RejectKind.INVALID_PARTITIONS,
                f"number of partitions must be in 1..{PARTITIONS_PER_TOPIC_MAX}, got {req.partitions}",
                "partitions",
            )
        if req.replication_factor < 1:
            raise TopicRejected(
                RejectKind.INVALID_REPLICATION_FACTOR,
                f"replication factor must be >= 1, got {req.replication_factor}",
                "replication_factor",
            )
        assignments = _place(image, req.partitions, req.replication_factor, 0, "replication_factor")
    return CreateTopic(req.name, topic_id, assignments, tuple(sorted(req.configs.items())))


def create_partitions(
    image: MetadataImage, name: str, count: int, assignments: Assignments | None = None
) -> CreatePartitions:
    """Grow ``name`` to ``count`` partitions: the new ones placed here with the topic's replication factor, or
    exactly ``assignments`` (one per new partition) when given."""
    topic = _topic(image, name)
    current = len(topic.partitions)
    if count <= current:
        raise TopicRejected(
            RejectKind.INVALID_PARTITIONS,
            f"topic {name!r} has {current} partitions; the new count {count} must be larger",
            "partitions",
        )
    if count > PARTITIONS_PER_TOPIC_MAX:  # refused before placement loops over them
        raise TopicRejected(RejectKind.INVALID_PARTITIONS, f"cannot grow {name!r} to {count} partitions", "partitions")
    if assignments is None:
        rf = len(topic.partitions[0].replicas) if topic.partitions else 1
        assignments = _place(image, count - current, rf, current, "partitions")
    elif len(assignments) != count - current:
        raise TopicRejected(
            RejectKind.INVALID_REPLICA_ASSIGNMENT,
            f"{len(assignments)} assignments given for {count - current} new partitions",
        )
    return CreatePartitions(name, assignments)


def alter_topic(image: MetadataImage, name: str, changes: TopicChanges) -> tuple[Command, ...]:
    """The commands that make ``changes`` to ``name``, in the order to propose them: configs, then one
    ReassignPartition per partition for a new replication factor, then new partitions (placed with that factor).

    Every command but the new partitions is validated here against ``image``, so a request that cannot succeed as a
    whole proposes nothing; the new partitions are checked where they are proposed, after the reassignments.
    """
    topic = _topic(image, name)
    commands: list[Command] = []
    if changes.set_configs or changes.delete_configs:
        commands.append(AlterTopicConfigs(name, tuple(sorted(changes.set_configs.items())), changes.delete_configs))
    rf = len(topic.partitions[0].replicas)
    if changes.replication_factor is not None and changes.replication_factor != rf:
        commands.extend(_replication_factor_changes(image, topic, changes.replication_factor))
        rf = changes.replication_factor
    current = len(topic.partitions)
    if changes.partitions is not None and changes.partitions != current:
        if changes.partitions < current:
            raise TopicRejected(
                RejectKind.INVALID_PARTITIONS,
                f"topic {name!r} has {current} partitions; the new count {changes.partitions} must be larger",
                "partitions",
            )
        added = _place(image, changes.partitions - current, rf, current, "partitions")
        commands.append(CreatePartitions(name, added))
    for cmd in commands:
        rejection = None if isinstance(cmd, CreatePartitions) else validate(image, cmd)
        if rejection is not None:
            raise TopicRejected(rejection.kind, rejection.message)
    return tuple(commands)


def _replication_factor_changes(image: MetadataImage, topic: TopicImage, rf: int) -> list[Command]:
    out: list[Command] = []
    for p in topic.partitions:
        if rf > len(p.replicas):
            try:
                replicas = grow_replicas(image, p.replicas, rf)
            except ValueError as e:
                raise TopicRejected(RejectKind.INVALID_REPLICATION_FACTOR, str(e), "replication_factor") from None
        else:
            # Drop replicas outside the ISR first, then in-sync followers, last first; the leader stays.
            keep = list(p.replicas)
            for dropping_in_sync in (False, True):
                for r in reversed(p.replicas):
                    if len(keep) > rf and r != p.leader and (r in p.isr) == dropping_in_sync:
                        keep.remove(r)
            replicas = tuple(keep)
        out.append(ReassignPartition(topic.name, p.partition, replicas))
    return out


def delete_topic(image: MetadataImage, name: str) -> DeleteTopic:
    """The DeleteTopic command for an existing topic."""
    _topic(image, name)
    return DeleteTopic(name)
