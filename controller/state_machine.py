"""The metadata state machine: validate a command against an image, apply it deterministically.

Runs in every process; pure (no I/O, no clock, no randomness: ids are chosen by the proposer and carried in the
command). ``validate`` runs before a command is proposed, so a bad command never enters the log; ``apply`` asserts
what ``validate`` checked, because a command in the log that does not apply means the log or this code is broken.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from types import MappingProxyType
from typing import Any

from controller.acls import ACL_CHANGES_PER_REQUEST_MAX, ACL_COUNT_MAX, validate_binding
from controller.commands import (
    AllocateProducerIds,
    AlterClientQuota,
    AlterPartition,
    AlterTopicConfigs,
    ChangePartition,
    Command,
    CreateAcls,
    CreatePartitions,
    CreateTopic,
    DecommissionBroker,
    DeleteAcls,
    DeleteScramCredential,
    DeleteTopic,
    ElectLeader,
    FenceBroker,
    NoOp,
    ReassignPartition,
    RegisterBroker,
    SetBrokerMaintenance,
    UnfenceBroker,
    UpsertScramCredential,
)
from controller.image import BrokerRegistration, MetadataImage, PartitionImage, ScramCredentialRecord, TopicImage
from controller.names import topic_name_error
from controller.quotas import QUOTA_ENTITIES_MAX, entity_problem, key_problem, normalized
from controller.scram import (
    SCRAM_CREDENTIALS_MAX,
    SCRAM_ITERATIONS_MAX,
    SCRAM_ITERATIONS_MIN,
    SCRAM_MECHANISMS,
    SCRAM_MOCK_SECRET_BYTES,
    SCRAM_SALT_BYTES_MAX,
    scram_username_error,
)
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
    # The command is well formed but the cluster's state does not allow it now (say, a leader outside the ISR).
    CONFLICT = "conflict"
    # SCRAM credentials (KIP-554), named after the Kafka errors they become: a user name, iteration count, salt or
    # key the rules refuse; a mechanism that is not SCRAM-SHA-256/512; a deletion of a credential that is not there
    # (RESOURCE_NOT_FOUND).
    UNACCEPTABLE_CREDENTIAL = "unacceptable_credential"
    UNSUPPORTED_SASL_MECHANISM = "unsupported_sasl_mechanism"
    UNKNOWN_CREDENTIAL = "unknown_credential"
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
        nodes = [image.brokers[b].node for b in replicas]
        if len(set(nodes)) != len(nodes):
            return Rejection(
                RejectKind.INVALID_REPLICA_ASSIGNMENT,
                f"partition {p}: replicas {replicas} put two copies on one node (one replica per node)",
            )
    return None


def _broker_rejection(image: MetadataImage, cmd: Command) -> Rejection | None:
    assert isinstance(cmd, FenceBroker | UnfenceBroker | SetBrokerMaintenance | DecommissionBroker)
    reg = image.brokers.get(cmd.broker_id)
    if reg is None:
        return Rejection(RejectKind.UNKNOWN_BROKER, f"broker {cmd.broker_id} is not registered")
    if isinstance(cmd, FenceBroker | UnfenceBroker) and reg.incarnation != cmd.incarnation:
        return Rejection(RejectKind.CONFLICT, f"broker {cmd.broker_id} registered again since (incarnation changed)")
    if isinstance(cmd, FenceBroker) and reg.fenced:
        return Rejection(RejectKind.CONFLICT, f"broker {cmd.broker_id} is fenced already")
    if isinstance(cmd, UnfenceBroker) and not reg.fenced:
        return Rejection(RejectKind.CONFLICT, f"broker {cmd.broker_id} is not fenced")
    if isinstance(cmd, SetBrokerMaintenance) and reg.maintenance == cmd.enabled:
        return Rejection(
            RejectKind.CONFLICT, f"broker {cmd.broker_id} is {'already' if cmd.enabled else 'not'} in maintenance"
        )
    if isinstance(cmd, DecommissionBroker) and reg.decommissioning:
        return Rejection(RejectKind.CONFLICT, f"broker {cmd.broker_id} is decommissioning already")
    return None


def _partition_of(image: MetadataImage, topic_name: str, partition: int) -> PartitionImage | Rejection:
    """The partition a command names, or UNKNOWN_TOPIC when its topic or its index does not exist."""
    topic = image.topics.get(topic_name)
    if topic is None or not 0 <= partition < len(topic.partitions):
        return Rejection(RejectKind.UNKNOWN_TOPIC, f"{topic_name}-{partition} does not exist")
    return topic.partitions[partition]


def _reassignment_rejection(image: MetadataImage, cmd: ReassignPartition) -> Rejection | None:
    p = _partition_of(image, cmd.topic, cmd.partition)
    if isinstance(p, Rejection):
        return p
    rejection = _check_assignments(image, (cmd.replicas,), None)
    if rejection is not None:
        return rejection
    name = f"{cmd.topic}-{cmd.partition}"
    if p.adding and set(cmd.replicas) != set(p.replicas) - set(p.adding):
        return Rejection(
            RejectKind.CONFLICT,
            f"{name}: a reassignment to {list(p.target_replicas)} is in progress (adding {list(p.adding)}); wait for "
            f"it or cancel it by reassigning to {[r for r in p.replicas if r not in p.adding]}",
        )
    union = (*p.replicas, *(r for r in cmd.replicas if r not in p.replicas))
    rejection = _check_assignments(image, (union,), None)
    if rejection is not None:
        return Rejection(rejection.kind, f"{name}: old and new replicas are all kept while moving: {rejection.message}")
    adding = [r for r in cmd.replicas if r not in p.replicas]
    if not adding and not _leader_candidates(image, replace(p, replicas=cmd.replicas), -1):
        return Rejection(
            RejectKind.CONFLICT,
            f"{name}: the new replicas {cmd.replicas} keep no unfenced in-sync replica of {p.isr}; only those hold "
            "all acknowledged data",
        )
    leaving = [r for r in adding if image.brokers[r].decommissioning]
    if leaving:
        return Rejection(RejectKind.CONFLICT, f"broker(s) {leaving} are decommissioning and take no new replicas")
    return None


def _reassign(image: MetadataImage, p: PartitionImage, target: tuple[int, ...]) -> PartitionImage:
    """KRaft's reassignment: new replicas are added first and copy the log; the old ones leave once every new one is
    in sync (``_complete_reassignment``). Without new replicas (or cancelled) it takes effect at once."""
    adding = tuple(r for r in target if r not in p.replicas and r not in p.adding)
    if adding:
        removing = tuple(r for r in p.replicas if r not in target)
        return replace(
            p, replicas=target + removing, adding=adding, removing=removing, partition_epoch=p.partition_epoch + 1
        )
    return _take_replicas(image, p, target)


def _take_replicas(image: MetadataImage, p: PartitionImage, target: tuple[int, ...]) -> PartitionImage:
    """``target`` becomes the replica list now: replicas that leave also leave the ISR; if the leader leaves, the
    first remaining in-sync replica leads."""
    isr = tuple(r for r in p.isr if r in target)
    moved = replace(p, replicas=target, adding=(), removing=())
    if p.leader in target:
        return replace(moved, isr=isr, partition_epoch=p.partition_epoch + 1)
    return _elect(moved, _leader_candidates(image, replace(moved, isr=isr), -1)[0], isr)


def _complete_reassignment(image: MetadataImage, p: PartitionImage) -> PartitionImage:
    if p.adding and all(r in p.isr for r in p.adding):
        return _take_replicas(image, p, p.target_replicas)
    return p


def _elect_leader_rejection(image: MetadataImage, cmd: ElectLeader) -> Rejection | None:
    p = _partition_of(image, cmd.topic, cmd.partition)
    if isinstance(p, Rejection):
        return p
    name = f"{cmd.topic}-{cmd.partition}"
    if cmd.partition_epoch != p.partition_epoch:
        return Rejection(
            RejectKind.STALE_LEADER_EPOCH,
            f"{name} changed since the election was decided (partition epoch {p.partition_epoch}, not "
            f"{cmd.partition_epoch})",
        )
    if cmd.leader not in p.isr:
        return Rejection(
            RejectKind.CONFLICT, f"broker {cmd.leader} is not in the ISR {list(p.isr)} of {name}: it lacks the data"
        )
    reg = image.brokers.get(cmd.leader)
    if reg is None or reg.fenced:
        return Rejection(RejectKind.CONFLICT, f"broker {cmd.leader} is fenced or not registered: it cannot lead")
    return None


def _alter_partition_rejection(image: MetadataImage, cmd: AlterPartition) -> Rejection | None:
    p = _partition_of(image, cmd.topic, cmd.partition)
    if isinstance(p, Rejection):
        return p
    if (cmd.leader, cmd.leader_epoch, cmd.partition_epoch) != (p.leader, p.leader_epoch, p.partition_epoch):
        return Rejection(
            RejectKind.STALE_LEADER_EPOCH,
            f"{cmd.topic}-{cmd.partition}: leader {cmd.leader} at epochs {cmd.leader_epoch}/{cmd.partition_epoch}, "
            f"the partition is at leader {p.leader}, epochs {p.leader_epoch}/{p.partition_epoch}",
        )
    if cmd.leader not in cmd.isr or not set(cmd.isr) <= set(p.replicas) or len(set(cmd.isr)) != len(cmd.isr):
        return Rejection(
            RejectKind.INVALID_REQUEST, f"ISR {cmd.isr} is not a set of replicas {p.replicas} holding the leader"
        )
    joining = [r for r in cmd.isr if r not in p.isr and (r not in image.brokers or image.brokers[r].fenced)]
    if joining:
        return Rejection(RejectKind.CONFLICT, f"broker(s) {joining} are fenced: they cannot join the ISR")
    return None


def _no_rejection(image: MetadataImage, cmd: NoOp) -> Rejection | None:
    return None


def _register_rejection(image: MetadataImage, cmd: RegisterBroker) -> Rejection | None:
    if cmd.broker_id < 0 or not 0 < cmd.port < 65536 or not cmd.host:
        return Rejection(RejectKind.INVALID_REQUEST, f"bad broker registration {cmd}")
    return None


def _create_topic_rejection(image: MetadataImage, cmd: CreateTopic) -> Rejection | None:
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


def _create_partitions_rejection(image: MetadataImage, cmd: CreatePartitions) -> Rejection | None:
    topic = image.topics.get(cmd.name)
    if topic is None:
        return Rejection(RejectKind.UNKNOWN_TOPIC, f"topic {cmd.name!r} does not exist")
    total = len(topic.partitions) + len(cmd.new_assignments)
    if not cmd.new_assignments or total > PARTITIONS_PER_TOPIC_MAX:
        return Rejection(RejectKind.INVALID_PARTITIONS, f"cannot grow {cmd.name!r} to {total} partitions")
    return _check_assignments(image, cmd.new_assignments, len(topic.partitions[0].replicas))


def _delete_topic_rejection(image: MetadataImage, cmd: DeleteTopic) -> Rejection | None:
    if cmd.name not in image.topics:
        return Rejection(RejectKind.UNKNOWN_TOPIC, f"topic {cmd.name!r} does not exist")
    return None


def _change_partition_rejection(image: MetadataImage, cmd: ChangePartition) -> Rejection | None:
    p = _partition_of(image, cmd.topic, cmd.partition)
    if isinstance(p, Rejection):
        return p
    if not set(cmd.isr) <= set(p.replicas) or len(set(cmd.isr)) != len(cmd.isr):
        return Rejection(RejectKind.INVALID_REQUEST, f"ISR {cmd.isr} is not a set of replicas {p.replicas}")
    if cmd.leader != -1 and cmd.leader not in cmd.isr:
        return Rejection(RejectKind.CONFLICT, f"leader {cmd.leader} is not in the ISR {cmd.isr}")
    reg = image.brokers.get(cmd.leader)
    if cmd.leader != -1 and (reg is None or reg.fenced):
        return Rejection(RejectKind.CONFLICT, f"broker {cmd.leader} is fenced or not registered: it cannot lead")
    if cmd.leader_epoch < p.leader_epoch or (cmd.leader != p.leader and cmd.leader_epoch == p.leader_epoch):
        return Rejection(
            RejectKind.STALE_LEADER_EPOCH, f"leader epoch {cmd.leader_epoch} does not move past {p.leader_epoch}"
        )
    return None


def _producer_ids_rejection(image: MetadataImage, cmd: AllocateProducerIds) -> Rejection | None:
    if cmd.broker_id not in image.brokers:
        return Rejection(RejectKind.UNKNOWN_BROKER, f"broker {cmd.broker_id} is not registered")
    if not 1 <= cmd.count <= PRODUCER_ID_BLOCK_MAX:
        return Rejection(
            RejectKind.INVALID_REQUEST, f"producer id block size {cmd.count} not in 1..{PRODUCER_ID_BLOCK_MAX}"
        )
    if image.next_producer_id + cmd.count > PRODUCER_ID_MAX:
        return Rejection(RejectKind.INVALID_REQUEST, "producer ids exhausted")
    return None


def _alter_configs_rejection(image: MetadataImage, cmd: AlterTopicConfigs) -> Rejection | None:
    assert isinstance(cmd, AlterTopicConfigs)
    topic = image.topics.get(cmd.name)
    if topic is None:
        return Rejection(RejectKind.UNKNOWN_TOPIC, f"topic {cmd.name!r} does not exist")
    merged = {k: v for k, v in topic.configs.items() if k not in cmd.delete_configs}
    merged.update(cmd.set_configs)
    problem = validate_topic_configs(merged)
    return None if problem is None else Rejection(RejectKind.INVALID_CONFIG, problem)


def _scram_key_rejection(user: str, mechanism: str) -> Rejection | None:
    """Kafka's validateScramUsernameAndMechanism (ScramControlManager), user first."""
    problem = scram_username_error(user)
    if problem is not None:
        return Rejection(RejectKind.UNACCEPTABLE_CREDENTIAL, problem)
    if mechanism not in SCRAM_MECHANISMS:
        return Rejection(
            RejectKind.UNSUPPORTED_SASL_MECHANISM,
            f"Unknown SCRAM mechanism {mechanism!r}: expected one of {', '.join(SCRAM_MECHANISMS)}",
        )
    return None


def _upsert_scram_rejection(image: MetadataImage, cmd: UpsertScramCredential) -> Rejection | None:
    rejection = _scram_key_rejection(cmd.user, cmd.mechanism)
    if rejection is not None:
        return rejection
    # Kafka's messages ("Too few iterations", "Too many iterations"), with the numbers.
    if cmd.iterations < SCRAM_ITERATIONS_MIN:
        return Rejection(
            RejectKind.UNACCEPTABLE_CREDENTIAL, f"Too few iterations: {cmd.iterations} < {SCRAM_ITERATIONS_MIN}"
        )
    if cmd.iterations > SCRAM_ITERATIONS_MAX:
        return Rejection(
            RejectKind.UNACCEPTABLE_CREDENTIAL, f"Too many iterations: {cmd.iterations} > {SCRAM_ITERATIONS_MAX}"
        )
    if not 1 <= len(cmd.salt) <= SCRAM_SALT_BYTES_MAX:
        return Rejection(
            RejectKind.UNACCEPTABLE_CREDENTIAL, f"Salt must be 1 to {SCRAM_SALT_BYTES_MAX} bytes, got {len(cmd.salt)}"
        )
    size = SCRAM_MECHANISMS[cmd.mechanism]
    if len(cmd.stored_key) != size or len(cmd.server_key) != size:
        return Rejection(RejectKind.UNACCEPTABLE_CREDENTIAL, f"{cmd.mechanism} stored and server keys are {size} bytes")
    if len(cmd.mock_secret) != SCRAM_MOCK_SECRET_BYTES:
        return Rejection(RejectKind.INVALID_REQUEST, f"the mock secret must be {SCRAM_MOCK_SECRET_BYTES} bytes")
    if (cmd.user, cmd.mechanism) not in image.scram_credentials and len(
        image.scram_credentials
    ) >= SCRAM_CREDENTIALS_MAX:
        return Rejection(
            RejectKind.CONFLICT, f"the cluster holds {SCRAM_CREDENTIALS_MAX} SCRAM credentials, the most it may"
        )
    return None


def _delete_scram_rejection(image: MetadataImage, cmd: DeleteScramCredential) -> Rejection | None:
    rejection = _scram_key_rejection(cmd.user, cmd.mechanism)
    if rejection is not None:
        return rejection
    if (cmd.user, cmd.mechanism) not in image.scram_credentials:
        # Kafka's message, with the credential named.
        return Rejection(
            RejectKind.UNKNOWN_CREDENTIAL,
            f"Attempt to delete a user credential that does not exist: {cmd.user} has no {cmd.mechanism} credential",
        )
    return None


def _create_acls_rejection(image: MetadataImage, cmd: CreateAcls) -> Rejection | None:
    if not cmd.acls:
        return Rejection(RejectKind.INVALID_REQUEST, "no ACL to create")
    if len(cmd.acls) > ACL_CHANGES_PER_REQUEST_MAX:
        return Rejection(
            RejectKind.INVALID_REQUEST, f"{len(cmd.acls)} ACLs in one request, more than {ACL_CHANGES_PER_REQUEST_MAX}"
        )
    for binding in cmd.acls:
        problem = validate_binding(binding)
        if problem is not None:
            return Rejection(RejectKind.INVALID_REQUEST, problem.message)
    new = len(set(cmd.acls)) - sum(1 for b in set(cmd.acls) if b in image.acls)
    if len(image.acls) + new > ACL_COUNT_MAX:
        return Rejection(
            RejectKind.CONFLICT, f"the cluster holds {len(image.acls)} ACLs; {new} more would pass {ACL_COUNT_MAX}"
        )
    return None


def _delete_acls_rejection(image: MetadataImage, cmd: DeleteAcls) -> Rejection | None:
    if len(cmd.acls) > ACL_CHANGES_PER_REQUEST_MAX:
        return Rejection(
            RejectKind.INVALID_REQUEST, f"{len(cmd.acls)} ACLs in one request, more than {ACL_CHANGES_PER_REQUEST_MAX}"
        )
    return None


def _client_quota_rejection(image: MetadataImage, cmd: AlterClientQuota) -> Rejection | None:
    if cmd.entity != normalized(cmd.entity):
        return Rejection(RejectKind.INVALID_REQUEST, "a quota entity's pairs are sorted by type")
    problem = entity_problem(cmd.entity) or key_problem(cmd.entity, cmd.key, cmd.value)
    if problem is not None:
        return Rejection(RejectKind.INVALID_REQUEST, problem)
    full = len(image.client_quotas) >= QUOTA_ENTITIES_MAX
    if cmd.value is not None and cmd.entity not in image.client_quotas and full:
        return Rejection(
            RejectKind.CONFLICT, f"the cluster holds quotas for {QUOTA_ENTITIES_MAX} entities, the most it may"
        )
    return None


# One validator per command type (etcd's and Kafka's controllers dispatch the same way). The command types are
# final, so the exact type finds the handler.
_VALIDATORS: dict[type[Any], Callable[[MetadataImage, Any], Rejection | None]] = {
    NoOp: _no_rejection,
    FenceBroker: _broker_rejection,
    UnfenceBroker: _broker_rejection,
    SetBrokerMaintenance: _broker_rejection,
    DecommissionBroker: _broker_rejection,
    ReassignPartition: _reassignment_rejection,
    ElectLeader: _elect_leader_rejection,
    RegisterBroker: _register_rejection,
    CreateTopic: _create_topic_rejection,
    CreatePartitions: _create_partitions_rejection,
    DeleteTopic: _delete_topic_rejection,
    ChangePartition: _change_partition_rejection,
    AlterPartition: _alter_partition_rejection,
    AllocateProducerIds: _producer_ids_rejection,
    AlterTopicConfigs: _alter_configs_rejection,
    UpsertScramCredential: _upsert_scram_rejection,
    DeleteScramCredential: _delete_scram_rejection,
    CreateAcls: _create_acls_rejection,
    DeleteAcls: _delete_acls_rejection,
    AlterClientQuota: _client_quota_rejection,
}


def validate(image: MetadataImage, cmd: Command) -> Rejection | None:
    # An unknown type fails the assertion in _alter_configs_rejection, as the last branch of an isinstance chain would.
    return _VALIDATORS.get(type(cmd), _alter_configs_rejection)(image, cmd)


def _partition(image: MetadataImage, index: int, replicas: tuple[int, ...]) -> PartitionImage:
    """A new partition: every replica holds the same (empty) log, so all unfenced ones are in sync (as in Kafka);
    the first of them leads."""
    isr = tuple(r for r in replicas if not image.brokers[r].fenced) or replicas[:1]
    return PartitionImage(index, replicas, isr, isr[0], 0, 0)


def _leader_candidates(image: MetadataImage, p: PartitionImage, exclude: int) -> list[int]:
    """In-sync replicas that may lead ``p``, in replica (preference) order: usable brokers first, then unfenced ones
    in maintenance or decommissioning (better than no leader)."""
    alive = [
        r
        for r in p.replicas
        if r in p.isr and r != exclude and (reg := image.brokers.get(r)) is not None and not reg.fenced
    ]
    return sorted(alive, key=lambda r: not image.brokers[r].usable)


def _map_partitions(
    image: MetadataImage, broker_id: int, change: Callable[[PartitionImage], PartitionImage]
) -> MetadataImage:
    """``image`` with ``change`` applied to every partition that lists ``broker_id`` as a replica."""
    topics = dict(image.topics)
    for name, topic in image.topics.items():
        parts = tuple(change(p) if broker_id in p.replicas else p for p in topic.partitions)
        if any(a is not b for a, b in zip(parts, topic.partitions, strict=True)):
            topics[name] = replace(topic, partitions=parts)
    return replace(image, topics=MappingProxyType(topics))


def _elect(p: PartitionImage, leader: int, isr: tuple[int, ...]) -> PartitionImage:
    return replace(p, leader=leader, isr=isr, leader_epoch=p.leader_epoch + 1, partition_epoch=p.partition_epoch + 1)


def _fence(image: MetadataImage, broker_id: int) -> MetadataImage:
    """KRaft's fencing: the broker leaves every ISR it is in (but never empties one: the last member stays, the one
    replica known to hold everything), and each partition it led moves to another in-sync replica or is leaderless."""

    def change(p: PartitionImage) -> PartitionImage:
        isr = tuple(r for r in p.isr if r != broker_id) if len(p.isr) > 1 else p.isr
        if p.leader == broker_id:
            candidates = _leader_candidates(image, replace(p, isr=isr), broker_id)
            return _elect(p, candidates[0] if candidates else -1, isr)
        return p if isr == p.isr else replace(p, isr=isr, partition_epoch=p.partition_epoch + 1)

    return _map_partitions(image, broker_id, change)


def _revive(image: MetadataImage, broker_id: int) -> MetadataImage:
    """Leaderless partitions whose ISR holds ``broker_id`` (back from fencing) get a leader again."""

    def change(p: PartitionImage) -> PartitionImage:
        if p.leader != -1 or broker_id not in p.isr:
            return p
        return _elect(p, _leader_candidates(image, p, -1)[0], p.isr)

    return _map_partitions(image, broker_id, change)


def _drain(image: MetadataImage, broker_id: int) -> MetadataImage:
    """Maintenance or decommissioning: leadership moves to another usable in-sync replica where there is one."""

    def change(p: PartitionImage) -> PartitionImage:
        if p.leader != broker_id:
            return p
        usable = [r for r in _leader_candidates(image, p, broker_id) if image.brokers[r].usable]
        return _elect(p, usable[0], p.isr) if usable else p

    return _map_partitions(image, broker_id, change)


def _with_broker(image: MetadataImage, reg: BrokerRegistration, offset: int) -> MetadataImage:
    brokers: dict[int, BrokerRegistration] = dict(image.brokers)
    brokers[reg.broker_id] = reg
    return replace(image, offset=offset, brokers=MappingProxyType(brokers))


def _with_topic(image: MetadataImage, topic: TopicImage, offset: int) -> MetadataImage:
    topics = dict(image.topics)
    topics[topic.name] = topic
    by_id = dict(image.topics_by_id)
    by_id[topic.topic_id] = topic.name
    return replace(image, offset=offset, topics=MappingProxyType(topics), topics_by_id=MappingProxyType(by_id))


def _apply_noop(image: MetadataImage, cmd: NoOp, offset: int) -> MetadataImage:
    return replace(image, offset=offset)


def _apply_register(image: MetadataImage, cmd: RegisterBroker, offset: int) -> MetadataImage:
    # A broker registers once it has caught up with the metadata: it is unfenced (a new incarnation replaces a
    # fenced one); maintenance and decommissioning are the operator's and survive restarts. Its broker epoch is
    # this record's offset.
    old = image.brokers.get(cmd.broker_id)
    if old is not None and old.incarnation != cmd.incarnation and not old.fenced:
        # KRaft's handleBrokerUncleanShutdown (KIP-841): the previous incarnation is gone (it never saw its
        # fencing) and its log may lack what it acknowledged as follower; fence it first, so the new one leads
        # only where it is the last in-sync replica and rejoins every other ISR only by fetching.
        image = _fence(image, cmd.broker_id)
    reg = BrokerRegistration(
        cmd.broker_id,
        cmd.host,
        cmd.port,
        cmd.rack,
        cmd.incarnation,
        node_id=cmd.node_id,
        maintenance=old is not None and old.maintenance,
        decommissioning=old is not None and old.decommissioning,
        epoch=offset,
        listeners=cmd.listeners,
    )
    return _revive(_with_broker(image, reg, offset), cmd.broker_id)


def _apply_fencing(image: MetadataImage, cmd: FenceBroker | UnfenceBroker, offset: int) -> MetadataImage:
    reg = replace(image.brokers[cmd.broker_id], fenced=isinstance(cmd, FenceBroker))
    image = _with_broker(image, reg, offset)
    return _fence(image, cmd.broker_id) if reg.fenced else _revive(image, cmd.broker_id)


def _apply_drain(image: MetadataImage, cmd: SetBrokerMaintenance | DecommissionBroker, offset: int) -> MetadataImage:
    reg = image.brokers[cmd.broker_id]
    if isinstance(cmd, SetBrokerMaintenance):
        reg = replace(reg, maintenance=cmd.enabled)
    else:
        reg = replace(reg, decommissioning=True)
    image = _with_broker(image, reg, offset)
    return _drain(image, cmd.broker_id) if not reg.usable else image


def _apply_reassign(image: MetadataImage, cmd: ReassignPartition, offset: int) -> MetadataImage:
    topic = image.topics[cmd.topic]
    parts = list(topic.partitions)
    parts[cmd.partition] = _reassign(image, parts[cmd.partition], cmd.replicas)
    return _with_topic(image, replace(topic, partitions=tuple(parts)), offset)


def _apply_elect_leader(image: MetadataImage, cmd: ElectLeader, offset: int) -> MetadataImage:
    topic = image.topics[cmd.topic]
    parts = list(topic.partitions)
    p = parts[cmd.partition]
    if p.leader != cmd.leader:
        parts[cmd.partition] = _elect(p, cmd.leader, p.isr)
    return _with_topic(image, replace(topic, partitions=tuple(parts)), offset)


def _apply_alter_partition(image: MetadataImage, cmd: AlterPartition, offset: int) -> MetadataImage:
    topic = image.topics[cmd.topic]
    parts = list(topic.partitions)
    old_p = parts[cmd.partition]
    changed = replace(old_p, isr=cmd.isr, partition_epoch=old_p.partition_epoch + 1)
    parts[cmd.partition] = _complete_reassignment(image, changed)
    return _with_topic(image, replace(topic, partitions=tuple(parts)), offset)


def _apply_create_topic(image: MetadataImage, cmd: CreateTopic, offset: int) -> MetadataImage:
    partitions = tuple(_partition(image, i, r) for i, r in enumerate(cmd.assignments))
    configs: Mapping[str, str] = MappingProxyType(dict(cmd.configs))
    return _with_topic(image, TopicImage(cmd.name, cmd.topic_id, partitions, configs), offset)


def _apply_create_partitions(image: MetadataImage, cmd: CreatePartitions, offset: int) -> MetadataImage:
    topic = image.topics[cmd.name]
    start = len(topic.partitions)
    added = tuple(_partition(image, start + i, r) for i, r in enumerate(cmd.new_assignments))
    return _with_topic(image, replace(topic, partitions=topic.partitions + added), offset)


def _apply_delete_topic(image: MetadataImage, cmd: DeleteTopic, offset: int) -> MetadataImage:
    topic = image.topics[cmd.name]
    topics = {k: v for k, v in image.topics.items() if k != cmd.name}
    by_id = {k: v for k, v in image.topics_by_id.items() if k != topic.topic_id}
    return replace(image, offset=offset, topics=MappingProxyType(topics), topics_by_id=MappingProxyType(by_id))


def _apply_change_partition(image: MetadataImage, cmd: ChangePartition, offset: int) -> MetadataImage:
    topic = image.topics[cmd.topic]
    current = topic.partitions[cmd.partition]
    new = replace(
        current,
        leader=cmd.leader,
        isr=cmd.isr,
        leader_epoch=cmd.leader_epoch,
        partition_epoch=current.partition_epoch + 1,
    )
    parts = list(topic.partitions)
    parts[cmd.partition] = new
    return _with_topic(image, replace(topic, partitions=tuple(parts)), offset)


def _apply_producer_ids(image: MetadataImage, cmd: AllocateProducerIds, offset: int) -> MetadataImage:
    start = image.next_producer_id
    blocks = dict(image.producer_id_blocks)
    blocks[cmd.broker_id] = (start, start + cmd.count)
    return replace(
        image, offset=offset, next_producer_id=start + cmd.count, producer_id_blocks=MappingProxyType(blocks)
    )


def _apply_alter_configs(image: MetadataImage, cmd: AlterTopicConfigs, offset: int) -> MetadataImage:
    topic = image.topics[cmd.name]
    merged = {k: v for k, v in topic.configs.items() if k not in cmd.delete_configs}
    merged.update(cmd.set_configs)
    return _with_topic(image, replace(topic, configs=MappingProxyType(merged)), offset)


def _apply_upsert_scram(image: MetadataImage, cmd: UpsertScramCredential, offset: int) -> MetadataImage:
    credentials = dict(image.scram_credentials)
    credentials[(cmd.user, cmd.mechanism)] = ScramCredentialRecord(
        cmd.mechanism, cmd.salt, cmd.iterations, cmd.stored_key, cmd.server_key
    )
    # The first credential's proposer chose the cluster's mock secret; it never changes afterwards (a new one would
    # change every unknown user's made-up salt, and that change would tell who had been unknown).
    secret = image.scram_mock_secret or cmd.mock_secret
    return replace(image, offset=offset, scram_credentials=MappingProxyType(credentials), scram_mock_secret=secret)


def _apply_delete_scram(image: MetadataImage, cmd: DeleteScramCredential, offset: int) -> MetadataImage:
    key = (cmd.user, cmd.mechanism)
    credentials = {k: v for k, v in image.scram_credentials.items() if k != key}
    return replace(image, offset=offset, scram_credentials=MappingProxyType(credentials))


def _apply_create_acls(image: MetadataImage, cmd: CreateAcls, offset: int) -> MetadataImage:
    return replace(image, offset=offset, acls=image.acls.changed(added=cmd.acls))


def _apply_delete_acls(image: MetadataImage, cmd: DeleteAcls, offset: int) -> MetadataImage:
    return replace(image, offset=offset, acls=image.acls.changed(removed=cmd.acls))


def _apply_client_quota(image: MetadataImage, cmd: AlterClientQuota, offset: int) -> MetadataImage:
    quotas = dict(image.client_quotas)
    values = dict(quotas.get(cmd.entity, {}))
    if cmd.value is None:
        values.pop(cmd.key, None)
    else:
        values[cmd.key] = cmd.value
    if values:
        quotas[cmd.entity] = MappingProxyType(values)
    else:
        quotas.pop(cmd.entity, None)
    return replace(image, offset=offset, client_quotas=MappingProxyType(quotas))


# One applier per command type, as in _VALIDATORS.
_APPLIERS: dict[type[Any], Callable[[MetadataImage, Any, int], MetadataImage]] = {
    NoOp: _apply_noop,
    RegisterBroker: _apply_register,
    FenceBroker: _apply_fencing,
    UnfenceBroker: _apply_fencing,
    SetBrokerMaintenance: _apply_drain,
    DecommissionBroker: _apply_drain,
    ReassignPartition: _apply_reassign,
    ElectLeader: _apply_elect_leader,
    AlterPartition: _apply_alter_partition,
    CreateTopic: _apply_create_topic,
    CreatePartitions: _apply_create_partitions,
    DeleteTopic: _apply_delete_topic,
    ChangePartition: _apply_change_partition,
    AllocateProducerIds: _apply_producer_ids,
    AlterTopicConfigs: _apply_alter_configs,
    UpsertScramCredential: _apply_upsert_scram,
    DeleteScramCredential: _apply_delete_scram,
    CreateAcls: _apply_create_acls,
    DeleteAcls: _apply_delete_acls,
    AlterClientQuota: _apply_client_quota,
}
assert set(_APPLIERS) == set(_VALIDATORS), "every command type is validated and applied"


def apply(image: MetadataImage, cmd: Command, offset: int) -> MetadataImage:
    rejection = validate(image, cmd)
    assert rejection is None, f"command at offset {offset} does not apply: {rejection}"
    return _APPLIERS[type(cmd)](image, cmd, offset)
