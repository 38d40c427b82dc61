"""The records of a KIP-848 consumer group in ``__consumer_offsets``, in Kafka's formats (key types 3 and 5-8).

Runs wherever ``offsets_records`` does; sans-IO. Keys are an int16 type then strings (never flexible); values an
int16 version (0) then the flexible encoding. Kafka's ``group-coordinator/src/main/resources/common/message``:

- 3 ``ConsumerGroupMetadata`` (group) -> group epoch;
- 5 ``ConsumerGroupMemberMetadata`` (group, member) -> instance id, rack, client id and host, subscribed topic names,
  regex, rebalance timeout, server assignor;
- 6 ``ConsumerGroupTargetAssignmentMetadata`` (group) -> assignment epoch;
- 7 ``ConsumerGroupTargetAssignmentMember`` (group, member) -> target partitions, by topic id;
- 8 ``ConsumerGroupCurrentMemberAssignment`` (group, member) -> member epoch, previous epoch, state, assigned
  partitions and partitions pending revocation, by topic id.

(Type 4, the subscribed topics' metadata, is not written: the coordinator reads partition counts from the metadata
image; it is skipped when read.) A tombstone (no value) deletes the key. Topic ids are given by the caller's maps, so
this module needs no metadata: a topic that no longer exists is left out when read.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass

from rafka_shards.groups.offsets_records import RecordFormatError, RecordReader, RecordWriter

GROUP_EPOCH_TYPE = 3
PARTITION_METADATA_TYPE = 4
MEMBER_METADATA_TYPE = 5
TARGET_EPOCH_TYPE = 6
TARGET_MEMBER_TYPE = 7
CURRENT_ASSIGNMENT_TYPE = 8
CONSUMER_KEY_TYPES = (3, 4, 5, 6, 7, 8)
MEMBER_STATES = ("stable", "unrevoked_partitions", "unreleased_partitions")  # Kafka's MemberState values 0, 1, 2

Partitions = Mapping[str, frozenset[int]]  # topic name -> partitions


@dataclass(frozen=True, slots=True)
class GroupEpoch:
    epoch: int


@dataclass(frozen=True, slots=True)
class MemberMetadata:
    instance_id: str | None
    rack_id: str | None
    client_id: str
    client_host: str
    subscribed: tuple[str, ...]
    rebalance_timeout_ms: int
    assignor: str | None
    regex: str | None = None


@dataclass(frozen=True, slots=True)
class TargetEpoch:
    epoch: int


@dataclass(frozen=True, slots=True)
class TargetMember:
    partitions: Partitions


@dataclass(frozen=True, slots=True)
class CurrentAssignment:
    member_epoch: int
    previous_epoch: int
    state: str
    assigned: Partitions
    revoking: Partitions


Value = GroupEpoch | MemberMetadata | TargetEpoch | TargetMember | CurrentAssignment


@dataclass(frozen=True, slots=True)
class ConsumerRecord:
    kind: int
    group: str
    member: str | None  # for the member records (5, 7, 8)
    value: Value | None  # None: a tombstone


def encode_key(kind: int, group: str, member: str | None = None) -> bytes:
    w = RecordWriter(flexible=False)
    w.int16(kind)
    w.string(group)
    if kind in (MEMBER_METADATA_TYPE, TARGET_MEMBER_TYPE, CURRENT_ASSIGNMENT_TYPE):
        assert member is not None
        w.string(member)
    return bytes(w.buf)


def _partitions(w: RecordWriter, parts: Partitions, ids: Mapping[str, uuid.UUID]) -> None:
    known = [(ids[t], sorted(ps)) for t, ps in sorted(parts.items()) if t in ids]
    w.array_length(len(known))
    for topic_id, ps in known:
        w.buf += topic_id.bytes
        w.array_length(len(ps))
        for p in ps:
            w.int32(p)
        w.tags()


def encode_value(value: Value, ids: Mapping[str, uuid.UUID]) -> bytes:
    w = RecordWriter(flexible=True)
    w.int16(0)
    if isinstance(value, GroupEpoch | TargetEpoch):
        w.int32(value.epoch)
    elif isinstance(value, MemberMetadata):
        w.string(value.instance_id)
        w.string(value.rack_id)
        w.string(value.client_id)
        w.string(value.client_host)
        w.array_length(len(value.subscribed))
        for t in value.subscribed:
            w.string(t)
        w.string(value.regex)
        w.int32(value.rebalance_timeout_ms)
        w.string(value.assignor)
    elif isinstance(value, TargetMember):
        _partitions(w, value.partitions, ids)
    else:
        w.int32(value.member_epoch)
        w.int32(value.previous_epoch)
        w.buf += bytes([MEMBER_STATES.index(value.state)])
        _partitions(w, value.assigned, ids)
        _partitions(w, value.revoking, ids)
    w.tags()
    return bytes(w.buf)


def key_type(key: bytes) -> int:
    return RecordReader(key[:2], flexible=False).int16()


def _read_partitions(r: RecordReader, names: Mapping[uuid.UUID, str]) -> dict[str, frozenset[int]]:
    out: dict[str, frozenset[int]] = {}
    for _ in range(r.array_length()):
        topic_id = uuid.UUID(bytes=r.raw(16))
        ps = frozenset(r.int32() for _ in range(r.array_length()))
        r.tags()
        name = names.get(topic_id)
        if name is not None:
            out[name] = ps
    return out


def _decode_value(kind: int, buf: bytes, names: Mapping[uuid.UUID, str]) -> Value:
    r = RecordReader(buf, flexible=True)
    version = r.int16()
    if version != 0:
        raise RecordFormatError(f"consumer group record type {kind}: value version {version} (this reads 0)")
    value: Value
    if kind in (GROUP_EPOCH_TYPE, TARGET_EPOCH_TYPE):
        epoch = r.int32()
        value = GroupEpoch(epoch) if kind == GROUP_EPOCH_TYPE else TargetEpoch(epoch)
    elif kind == MEMBER_METADATA_TYPE:
        instance_id, rack_id, client_id, client_host = r.nullable_string(), r.nullable_string(), r.string(), r.string()
        subscribed = tuple(r.string() for _ in range(r.array_length()))
        regex = r.nullable_string()
        timeout = r.int32()
        assignor = r.nullable_string()
        value = MemberMetadata(instance_id, rack_id, client_id, client_host, subscribed, timeout, assignor, regex)
    elif kind == TARGET_MEMBER_TYPE:
        value = TargetMember(_read_partitions(r, names))
    else:
        member_epoch, previous = r.int32(), r.int32()
        state_code = r.raw(1)[0]
        if state_code >= len(MEMBER_STATES):
            raise RecordFormatError(f"member state {state_code}")
        assigned = _read_partitions(r, names)
        value = CurrentAssignment(
            member_epoch, previous, MEMBER_STATES[state_code], assigned, _read_partitions(r, names)
        )
    r.tags()
    r.end()
    return value


def decode(key: bytes, value: bytes | None, names: Mapping[uuid.UUID, str]) -> ConsumerRecord | None:
    """A consumer group record (None for type 4, which this coordinator does not use); RecordFormatError when
    malformed."""
    r = RecordReader(key, flexible=False)
    kind = r.int16()
    group = r.string()
    member = r.string() if kind in (MEMBER_METADATA_TYPE, TARGET_MEMBER_TYPE, CURRENT_ASSIGNMENT_TYPE) else None
    r.end()
    if kind == PARTITION_METADATA_TYPE:
        return None
    if kind not in CONSUMER_KEY_TYPES:
        raise RecordFormatError(f"key type {kind} is not a consumer group record")
    return ConsumerRecord(kind, group, member, None if value is None else _decode_value(kind, value, names))
