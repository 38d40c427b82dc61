"""Typed metadata commands and their versioned wire/disk format (orjson, strict: no pickle, no eval).

Runs in every process that reads or writes the metadata log. ``decode_command`` is safe on untrusted bytes: anything
but a well-formed, known command of a known version raises ``CommandDecodeError``.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import orjson

from controller.acls import AclBinding, AclDecodeError, binding_from_json, binding_to_json
from controller.quotas import QuotaEntity

FORMAT_VERSION = 1


class CommandDecodeError(Exception):
    """Bytes that are not a valid command of a known type and version."""


@dataclass(frozen=True, slots=True)
class RegisterBroker:
    TYPE: ClassVar[str] = "RegisterBroker"
    broker_id: int
    host: str
    port: int
    rack: str | None
    incarnation: str
    # The node (controller node id) whose shard this broker is: one replica of a partition per node. None in
    # records written before it existed: such a broker counts as a node of its own.
    node_id: int | None = None
    # (listener name, advertised host, port) of every listener, the inter-broker one (host, port) included; empty in
    # records written before named listeners: then (host, port) serves every listener.
    listeners: tuple[tuple[str, str, int], ...] = ()


@dataclass(frozen=True, slots=True)
class CreateTopic:
    TYPE: ClassVar[str] = "CreateTopic"
    name: str
    topic_id: uuid.UUID
    assignments: tuple[tuple[int, ...], ...]  # assignments[p] = replicas of partition p, preferred leader first
    configs: tuple[tuple[str, str], ...]


@dataclass(frozen=True, slots=True)
class CreatePartitions:
    TYPE: ClassVar[str] = "CreatePartitions"
    name: str
    new_assignments: tuple[tuple[int, ...], ...]


@dataclass(frozen=True, slots=True)
class DeleteTopic:
    TYPE: ClassVar[str] = "DeleteTopic"
    name: str


@dataclass(frozen=True, slots=True)
class ChangePartition:
    TYPE: ClassVar[str] = "ChangePartition"
    topic: str
    partition: int
    leader: int
    isr: tuple[int, ...]
    leader_epoch: int


@dataclass(frozen=True, slots=True)
class AlterPartition:
    """The partition's leader changes its ISR (Kafka's AlterPartition, KIP-497): followers that caught up join,
    followers that fell behind for replica.lag.time.max.ms leave. Valid only for the current leader at the current
    leader and partition epochs, so a stale request (the controller moved leadership or the ISR meanwhile) is
    refused; a fenced broker never joins (KIP-841)."""

    TYPE: ClassVar[str] = "AlterPartition"
    topic: str
    partition: int
    leader: int
    leader_epoch: int
    partition_epoch: int
    isr: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class AlterTopicConfigs:
    TYPE: ClassVar[str] = "AlterTopicConfigs"
    name: str
    set_configs: tuple[tuple[str, str], ...]
    delete_configs: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class AllocateProducerIds:
    """A block of ``count`` producer ids for one broker (KIP-730): ids are unique across the cluster and restarts."""

    TYPE: ClassVar[str] = "AllocateProducerIds"
    broker_id: int
    count: int


@dataclass(frozen=True, slots=True)
class FenceBroker:
    """The broker's lease expired (proposed by the active controller only): it stops leading; each partition it led
    moves to another usable in-sync replica or becomes leaderless, with a new leader epoch."""

    TYPE: ClassVar[str] = "FenceBroker"
    broker_id: int
    incarnation: str


@dataclass(frozen=True, slots=True)
class UnfenceBroker:
    """A fenced broker heartbeats again and has caught up with the metadata: leaderless partitions whose ISR holds it
    get it back as leader."""

    TYPE: ClassVar[str] = "UnfenceBroker"
    broker_id: int
    incarnation: str


@dataclass(frozen=True, slots=True)
class SetBrokerMaintenance:
    """Maintenance on: the broker hands leadership to another usable in-sync replica where there is one and gets no
    new replicas. Off: it is an ordinary broker again."""

    TYPE: ClassVar[str] = "SetBrokerMaintenance"
    broker_id: int
    enabled: bool


@dataclass(frozen=True, slots=True)
class DecommissionBroker:
    """The broker is leaving: no new replicas, leadership handed off as in maintenance; it is drained once no
    partition lists it as a replica (reassign them away)."""

    TYPE: ClassVar[str] = "DecommissionBroker"
    broker_id: int


@dataclass(frozen=True, slots=True)
class ReassignPartition:
    """New replica list for one partition (preferred leader first). The leader and ISR stay; every in-sync replica
    must be kept, because only they hold the partition's acknowledged data."""

    TYPE: ClassVar[str] = "ReassignPartition"
    topic: str
    partition: int
    replicas: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class ElectLeader:
    """Leadership moves to another in-sync replica (a leadership transfer, or the partition balancer evening out
    leader counts); the ISR stays. Valid only at the partition epoch it was decided on: if the ISR or the replicas
    changed meanwhile the decision was made on stale facts, and it is refused rather than applied to new ones."""

    TYPE: ClassVar[str] = "ElectLeader"
    topic: str
    partition: int
    leader: int
    partition_epoch: int


@dataclass(frozen=True, slots=True)
class UpsertScramCredential:
    """Create or replace the SCRAM credential of one user for one mechanism (KRaft's UserScramCredentialRecord,
    KIP-554): what RFC 5802's server keeps, never the password nor the salted password. ``mechanism`` is the SASL
    name (``controller.scram.SCRAM_MECHANISMS``). ``mock_secret`` is random bytes from the proposer: the first
    credential committed makes them the cluster's secret for the made-up credentials of unknown users
    (``MetadataImage.scram_mock_secret``); later commands' are ignored. Bytes travel as base64 in the JSON."""

    TYPE: ClassVar[str] = "UpsertScramCredential"
    user: str
    mechanism: str
    salt: bytes
    iterations: int
    stored_key: bytes = field(repr=False)
    server_key: bytes = field(repr=False)
    mock_secret: bytes = field(repr=False)


@dataclass(frozen=True, slots=True)
class DeleteScramCredential:
    """Remove the SCRAM credential of one user for one mechanism (KRaft's RemoveUserScramCredentialRecord); refused
    when there is none."""

    TYPE: ClassVar[str] = "DeleteScramCredential"
    user: str
    mechanism: str


@dataclass(frozen=True, slots=True)
class CreateAcls:
    """Add ACLs (KRaft's AccessControlEntryRecord, one command for a CreateAcls request's valid entries, applied
    together). An ACL already stored is kept once. Refused if any is invalid or the cluster would hold more than
    ``controller.acls.ACL_COUNT_MAX``."""

    TYPE: ClassVar[str] = "CreateAcls"
    acls: tuple[AclBinding, ...]


@dataclass(frozen=True, slots=True)
class DeleteAcls:
    """Remove these ACLs (KRaft's RemoveAccessControlEntryRecord): the ones a DeleteAcls request's filters matched
    on the proposer's image. One no longer stored (deleted meanwhile) is skipped."""

    TYPE: ClassVar[str] = "DeleteAcls"
    acls: tuple[AclBinding, ...]


@dataclass(frozen=True, slots=True)
class AlterClientQuota:
    """Set (``value``) or remove (``value`` None) one quota of one entity (KRaft's ClientQuotaRecord). ``entity``
    is sorted by type (``controller.quotas.normalized``); a name None is the type's default."""

    TYPE: ClassVar[str] = "AlterClientQuota"
    entity: QuotaEntity
    key: str
    value: float | None


@dataclass(frozen=True, slots=True)
class NoOp:
    """A Raft entry that carries no metadata (a new leader's no-op, a membership change): it only advances the
    offset, so shards see one dense sequence of offsets (KRaft's NoOpRecord). Never proposed by a shard."""

    TYPE: ClassVar[str] = "NoOp"


Command = (
    RegisterBroker
    | CreateTopic
    | CreatePartitions
    | DeleteTopic
    | ChangePartition
    | AlterPartition
    | AlterTopicConfigs
    | AllocateProducerIds
    | FenceBroker
    | UnfenceBroker
    | SetBrokerMaintenance
    | DecommissionBroker
    | ReassignPartition
    | ElectLeader
    | UpsertScramCredential
    | DeleteScramCredential
    | CreateAcls
    | DeleteAcls
    | AlterClientQuota
    | NoOp
)
_TYPES: dict[str, type[Any]] = {
    c.TYPE: c
    for c in (
        RegisterBroker,
        CreateTopic,
        CreatePartitions,
        DeleteTopic,
        ChangePartition,
        AlterPartition,
        AlterTopicConfigs,
        AllocateProducerIds,
        FenceBroker,
        UnfenceBroker,
        SetBrokerMaintenance,
        DecommissionBroker,
        ReassignPartition,
        ElectLeader,
        UpsertScramCredential,
        DeleteScramCredential,
        CreateAcls,
        DeleteAcls,
        AlterClientQuota,
        NoOp,
    )
}


# Fields added after records of their type were first written: absent in those records.
_OPTIONAL_FIELDS: dict[type[Any], frozenset[str]] = {RegisterBroker: frozenset({"node_id", "listeners"})}


def _to_json(value: Any) -> Any:
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, tuple):
        return [_to_json(v) for v in value]
    if isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")
    if isinstance(value, AclBinding):
        return binding_to_json(value)
    return value


def encode_command(cmd: Command) -> bytes:
    body: dict[str, Any] = {"v": FORMAT_VERSION, "type": cmd.TYPE}
    for f in dataclasses.fields(cmd):
        body[f.name] = _to_json(getattr(cmd, f.name))
    return orjson.dumps(body)


def _int(v: Any, name: str) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or not -(2**63) <= v < 2**63:
        raise CommandDecodeError(f"{name}: expected an integer")
    return v


def _str(v: Any, name: str) -> str:
    if not isinstance(v, str):
        raise CommandDecodeError(f"{name}: expected a string")
    return v


def _list(v: Any, name: str) -> list[Any]:
    if not isinstance(v, list):
        raise CommandDecodeError(f"{name}: expected a list")
    return v


def _bool(v: Any, name: str) -> bool:
    if not isinstance(v, bool):
        raise CommandDecodeError(f"{name}: expected true or false")
    return v


def _bytes(v: Any, name: str) -> bytes:
    """Standard base64 with padding, in its one canonical spelling (no whitespace, no stray bits)."""
    text = _str(v, name)
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise CommandDecodeError(f"{name}: expected base64") from None
    if base64.b64encode(data).decode("ascii") != text:
        raise CommandDecodeError(f"{name}: not canonical base64")
    return data


def _ints(v: Any, name: str) -> tuple[int, ...]:
    return tuple(_int(x, name) for x in _list(v, name))


def _pairs(v: Any, name: str) -> tuple[tuple[str, str], ...]:
    out = []
    for item in _list(v, name):
        pair = _list(item, name)
        if len(pair) != 2:
            raise CommandDecodeError(f"{name}: expected [key, value] pairs")
        out.append((_str(pair[0], name), _str(pair[1], name)))
    return tuple(out)


def decode_command(data: bytes) -> Command:
    try:
        body = orjson.loads(data)
    except orjson.JSONDecodeError as e:
        raise CommandDecodeError(f"not JSON: {e}") from None
    return command_from_json(body)


def _register_broker(b: dict[str, Any]) -> Command:
    rack = b["rack"]
    node_id = b.get("node_id")
    return RegisterBroker(
        _int(b["broker_id"], "broker_id"),
        _str(b["host"], "host"),
        _int(b["port"], "port"),
        None if rack is None else _str(rack, "rack"),
        _str(b["incarnation"], "incarnation"),
        None if node_id is None else _int(node_id, "node_id"),
        _listeners(b.get("listeners", [])),
    )


def _listeners(v: Any) -> tuple[tuple[str, str, int], ...]:
    out = []
    for item in _list(v, "listeners"):
        entry = _list(item, "listeners")
        if len(entry) != 3:
            raise CommandDecodeError("listeners: expected [name, host, port] triples")
        out.append((_str(entry[0], "listeners"), _str(entry[1], "listeners"), _int(entry[2], "listeners")))
    return tuple(out)


def _create_topic(b: dict[str, Any]) -> Command:
    try:
        topic_id = uuid.UUID(_str(b["topic_id"], "topic_id"))
    except ValueError:
        raise CommandDecodeError("topic_id: not a UUID") from None
    return CreateTopic(
        _str(b["name"], "name"),
        topic_id,
        tuple(_ints(a, "assignments") for a in _list(b["assignments"], "assignments")),
        _pairs(b["configs"], "configs"),
    )


def _create_partitions(b: dict[str, Any]) -> Command:
    return CreatePartitions(
        _str(b["name"], "name"),
        tuple(_ints(a, "new_assignments") for a in _list(b["new_assignments"], "new_assignments")),
    )


def _delete_topic(b: dict[str, Any]) -> Command:
    return DeleteTopic(_str(b["name"], "name"))


def _change_partition(b: dict[str, Any]) -> Command:
    return ChangePartition(
        _str(b["topic"], "topic"),
        _int(b["partition"], "partition"),
        _int(b["leader"], "leader"),
        _ints(b["isr"], "isr"),
        _int(b["leader_epoch"], "leader_epoch"),
    )


def _alter_partition(b: dict[str, Any]) -> Command:
    return AlterPartition(
        _str(b["topic"], "topic"),
        _int(b["partition"], "partition"),
        _int(b["leader"], "leader"),
        _int(b["leader_epoch"], "leader_epoch"),
        _int(b["partition_epoch"], "partition_epoch"),
        _ints(b["isr"], "isr"),
    )


def _no_op(b: dict[str, Any]) -> Command:
    return NoOp()


def _fence_broker(b: dict[str, Any]) -> Command:
    return FenceBroker(_int(b["broker_id"], "broker_id"), _str(b["incarnation"], "incarnation"))


def _unfence_broker(b: dict[str, Any]) -> Command:
    return UnfenceBroker(_int(b["broker_id"], "broker_id"), _str(b["incarnation"], "incarnation"))


def _set_broker_maintenance(b: dict[str, Any]) -> Command:
    return SetBrokerMaintenance(_int(b["broker_id"], "broker_id"), _bool(b["enabled"], "enabled"))


def _decommission_broker(b: dict[str, Any]) -> Command:
    return DecommissionBroker(_int(b["broker_id"], "broker_id"))


def _reassign_partition(b: dict[str, Any]) -> Command:
    return ReassignPartition(
        _str(b["topic"], "topic"), _int(b["partition"], "partition"), _ints(b["replicas"], "replicas")
    )


def _elect_leader(b: dict[str, Any]) -> Command:
    return ElectLeader(
        _str(b["topic"], "topic"),
        _int(b["partition"], "partition"),
        _int(b["leader"], "leader"),
        _int(b["partition_epoch"], "partition_epoch"),
    )


def _allocate_producer_ids(b: dict[str, Any]) -> Command:
    return AllocateProducerIds(_int(b["broker_id"], "broker_id"), _int(b["count"], "count"))


def _alter_topic_configs(b: dict[str, Any]) -> Command:
    return AlterTopicConfigs(
        _str(b["name"], "name"),
        _pairs(b["set_configs"], "set_configs"),
        tuple(_str(x, "delete_configs") for x in _list(b["delete_configs"], "delete_configs")),
    )


def _upsert_scram_credential(b: dict[str, Any]) -> Command:
    return UpsertScramCredential(
        _str(b["user"], "user"),
        _str(b["mechanism"], "mechanism"),
        _bytes(b["salt"], "salt"),
        _int(b["iterations"], "iterations"),
        _bytes(b["stored_key"], "stored_key"),
        _bytes(b["server_key"], "server_key"),
        _bytes(b["mock_secret"], "mock_secret"),
    )


def _delete_scram_credential(b: dict[str, Any]) -> Command:
    return DeleteScramCredential(_str(b["user"], "user"), _str(b["mechanism"], "mechanism"))


def _acls(v: Any) -> tuple[AclBinding, ...]:
    try:
        return tuple(binding_from_json(item) for item in _list(v, "acls"))
    except AclDecodeError as e:
        raise CommandDecodeError(f"acls: {e}") from None


def _create_acls(b: dict[str, Any]) -> Command:
    return CreateAcls(_acls(b["acls"]))


def _delete_acls(b: dict[str, Any]) -> Command:
    return DeleteAcls(_acls(b["acls"]))


def _alter_client_quota(b: dict[str, Any]) -> Command:
    entity = []
    for item in _list(b["entity"], "entity"):
        pair = _list(item, "entity")
        if len(pair) != 2:
            raise CommandDecodeError("entity: expected [type, name] pairs")
        entity.append((_str(pair[0], "entity"), None if pair[1] is None else _str(pair[1], "entity")))
    value = b["value"]
    if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
        raise CommandDecodeError("value: expected a number or null")
    return AlterClientQuota(tuple(entity), _str(b["key"], "key"), None if value is None else float(value))


# One decoder per command type: each reads the fields of a body whose field names were already checked.
_DECODERS: dict[type[Any], Callable[[dict[str, Any]], Command]] = {
    RegisterBroker: _register_broker,
    CreateTopic: _create_topic,
    CreatePartitions: _create_partitions,
    DeleteTopic: _delete_topic,
    ChangePartition: _change_partition,
    AlterPartition: _alter_partition,
    NoOp: _no_op,
    FenceBroker: _fence_broker,
    UnfenceBroker: _unfence_broker,
    SetBrokerMaintenance: _set_broker_maintenance,
    DecommissionBroker: _decommission_broker,
    ReassignPartition: _reassign_partition,
    ElectLeader: _elect_leader,
    AllocateProducerIds: _allocate_producer_ids,
    AlterTopicConfigs: _alter_topic_configs,
    UpsertScramCredential: _upsert_scram_credential,
    DeleteScramCredential: _delete_scram_credential,
    CreateAcls: _create_acls,
    DeleteAcls: _delete_acls,
    AlterClientQuota: _alter_client_quota,
}
assert set(_DECODERS) == set(_TYPES.values()), "every command type has a decoder"


def _command_type(body: Any) -> type[Any]:
    """The command class ``body`` encodes, once its version and field names are right."""
    if not isinstance(body, dict):
        raise CommandDecodeError("a command is a JSON object")
    if body.get("v") != FORMAT_VERSION:
        raise CommandDecodeError(f"unknown command format version {body.get('v')!r}")
    cls = _TYPES.get(body.get("type"))  # type: ignore[arg-type]
    if cls is None:
        raise CommandDecodeError(f"unknown command type {body.get('type')!r}")
    names = {f.name for f in dataclasses.fields(cls)}
    extra = set(body) - names - {"v", "type"}
    missing = names - set(body) - _OPTIONAL_FIELDS.get(cls, frozenset())
    if extra or missing:
        raise CommandDecodeError(f"{cls.TYPE}: unexpected fields {sorted(extra)}, missing {sorted(missing)}")
    return cls


def command_from_json(body: Any) -> Command:
    """A command from its parsed JSON object (as embedded in a controller channel message)."""
    return _DECODERS[_command_type(body)](body)
