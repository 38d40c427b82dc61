"""The records of ``__consumer_offsets``, in Kafka's own formats, and which partition of it holds a group.

A group's coordinator is the leader of partition ``Utils.abs(groupId.hashCode()) % partitions`` (Java's String hash
over UTF-16 code units), as in Kafka, so the same group lands on the same partition number in both. Each record is
keyed; the topic is compacted, so the latest record per key is the state, and a null value (tombstone) deletes it:

- key type 0 or 1, ``OffsetCommitKey`` (group, topic, partition) -> ``OffsetCommitValue`` (v0-v4; written as v3:
  offset, leader epoch, metadata, commit timestamp).
- key type 2, ``GroupMetadataKey`` (group) -> ``GroupMetadataValue`` (v0-v4; written as v3: protocol type,
  generation, protocol, leader, state timestamp, members with their subscription and assignment bytes).

Keys are an int16 type then the key's fields (never flexible); values an int16 version then the fields, in the
flexible encoding (compact lengths, tagged fields) from v4 on. The field lists follow apache/kafka's
``group-coordinator/src/main/resources/common/message/*.json``, so tools that read ``__consumer_offsets`` (Burrow,
Kafka's own formatter) read ours.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

OFFSET_COMMIT_KEY_TYPES = (0, 1)  # 0: the legacy key version, read; 1 is written
GROUP_METADATA_KEY_TYPE = 2
OFFSET_VALUE_VERSION = 3  # what Kafka writes when the commit has no expire timestamp
GROUP_VALUE_VERSION = 3
VALUE_VERSION_MAX = 4  # the first flexible version; later ones would not be readable by Kafka either (KIP-915)
RECORD_BYTES_MAX = 1 << 20  # a key or value larger than this is refused when read (a bounded decoder)

_I16 = struct.Struct(">h")
_I32 = struct.Struct(">i")
_I64 = struct.Struct(">q")


class RecordFormatError(ValueError):
    """A key or value of ``__consumer_offsets`` this coordinator cannot read (unknown type or version, truncated)."""


def partition_for(group_id: str, partitions: int) -> int:
    """The ``__consumer_offsets`` partition of ``group_id``: Kafka's ``Utils.abs(groupId.hashCode) % partitions``."""
    if partitions < 1:
        raise ValueError(f"__consumer_offsets has {partitions} partitions")
    h = 0
    units = group_id.encode("utf-16-be", "surrogatepass")
    for (unit,) in struct.iter_unpack(">H", units):
        h = (31 * h + unit) & 0xFFFFFFFF
    if h >= 1 << 31:
        h -= 1 << 32
    return (0 if h == -(1 << 31) else abs(h)) % partitions


# ---- typed records -------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class OffsetKey:
    group: str
    topic: str
    partition: int


@dataclass(frozen=True, slots=True)
class GroupKey:
    group: str


@dataclass(frozen=True, slots=True)
class OffsetValue:
    offset: int
    leader_epoch: int = -1  # -1: not known (values before v3 do not carry it)
    metadata: str = ""
    commit_timestamp: int = -1
    expire_timestamp: int = -1  # only v1 carries it; Kafka stopped writing it (KIP-211)


@dataclass(frozen=True, slots=True)
class MemberValue:
    member_id: str
    group_instance_id: str | None
    client_id: str
    client_host: str
    rebalance_timeout_ms: int
    session_timeout_ms: int
    subscription: bytes
    assignment: bytes


@dataclass(frozen=True, slots=True)
class GroupValue:
    protocol_type: str
    generation: int
    protocol: str | None
    leader: str | None
    current_state_timestamp: int  # -1: not known (values before v2)
    members: tuple[MemberValue, ...]


# ---- encoding ------------------------------------------------------------------------------------------------------


class _Writer:
    def __init__(self, flexible: bool) -> None:
        self.flexible = flexible
        self.buf = bytearray()

    def int16(self, v: int) -> None:
        self.buf += _I16.pack(v)

    def int32(self, v: int) -> None:
        self.buf += _I32.pack(v)

    def int64(self, v: int) -> None:
        self.buf += _I64.pack(v)

    def _length(self, n: int, classic: struct.Struct) -> None:
        """A length or -1 (null): uvarint(n + 1) when flexible, else ``classic``."""
        if self.flexible:
            n += 1
            while n >= 0x80:
                self.buf.append((n & 0x7F) | 0x80)
                n >>= 7
            self.buf.append(n)
        else:
            self.buf += classic.pack(n)

    def string(self, s: str | None) -> None:
        if s is None:
            self._length(-1, _I16)
            return
        data = s.encode()
        self._length(len(data), _I16)
        self.buf += data

    def bytes_(self, b: bytes) -> None:
        self._length(len(b), _I32)
        self.buf += b

    def array_length(self, n: int) -> None:
        self._length(n, _I32)

    def tags(self) -> None:
        if self.flexible:
            self.buf.append(0)


def encode_key(key: OffsetKey | GroupKey) -> bytes:
    w = _Writer(flexible=False)
    if isinstance(key, OffsetKey):
        w.int16(OFFSET_COMMIT_KEY_TYPES[-1])
        w.string(key.group)
        w.string(key.topic)
        w.int32(key.partition)
    else:
        w.int16(GROUP_METADATA_KEY_TYPE)
        w.string(key.group)
    return bytes(w.buf)


def _value_writer(version: int) -> _Writer:
    """A writer holding the value's version, in the encoding that version uses."""
    _check_version(version)
    w = _Writer(flexible=version >= 4)
    w.int16(version)
    return w


def encode_offset_value(value: OffsetValue, version: int = OFFSET_VALUE_VERSION) -> bytes:
    w = _value_writer(version)
    w.int64(value.offset)
    if version >= 3:
        w.int32(value.leader_epoch)
    w.string(value.metadata)
    w.int64(value.commit_timestamp)
    if version == 1:
        w.int64(value.expire_timestamp)
    w.tags()
    return bytes(w.buf)


def encode_group_value(value: GroupValue, version: int = GROUP_VALUE_VERSION) -> bytes:
    w = _value_writer(version)
    w.string(value.protocol_type)
    w.int32(value.generation)
    w.string(value.protocol)
    w.string(value.leader)
    if version >= 2:
        w.int64(value.current_state_timestamp)
    w.array_length(len(value.members))
    for m in value.members:
        w.string(m.member_id)
        if version >= 3:
            w.string(m.group_instance_id)
        w.string(m.client_id)
        w.string(m.client_host)
        if version >= 1:
            w.int32(m.rebalance_timeout_ms)
        w.int32(m.session_timeout_ms)
        w.bytes_(m.subscription)
        w.bytes_(m.assignment)
        w.tags()
    w.tags()
    return bytes(w.buf)


def _check_version(version: int) -> None:
    if not 0 <= version <= VALUE_VERSION_MAX:
        raise RecordFormatError(f"value version {version} (this coordinator reads 0-{VALUE_VERSION_MAX})")


# ---- decoding ------------------------------------------------------------------------------------------------------


class _Reader:
    def __init__(self, buf: bytes, flexible: bool) -> None:
        if len(buf) > RECORD_BYTES_MAX:
            raise RecordFormatError(f"{len(buf)} bytes: larger than {RECORD_BYTES_MAX}")
        self.buf = buf
        self.pos = 0
        self.flexible = flexible

    def _take(self, n: int) -> bytes:
        if n < 0 or self.pos + n > len(self.buf):
            raise RecordFormatError(f"truncated: {n} bytes wanted at {self.pos} of {len(self.buf)}")
        out = self.buf[self.pos : self.pos + n]
        self.pos += n
        return out

    def raw(self, n: int) -> bytes:
        """The next ``n`` bytes as they are (a UUID, an int8)."""
        return self._take(n)

    def int16(self) -> int:
        v: int = _I16.unpack(self._take(2))[0]
        return v

    def int32(self) -> int:
        v: int = _I32.unpack(self._take(4))[0]
        return v

    def int64(self) -> int:
        v: int = _I64.unpack(self._take(8))[0]
        return v

    def uvarint(self) -> int:
        value = shift = 0
        while True:
            b = self._take(1)[0]
            value |= (b & 0x7F) << shift
            if not b & 0x80:
                return value
            shift += 7
            if shift > 28:
                raise RecordFormatError("varint longer than 5 bytes")

    def _length(self, classic: struct.Struct) -> int:
        if self.flexible:
            return self.uvarint() - 1
        n: int = classic.unpack(self._take(classic.size))[0]
        return n

    def nullable_string(self) -> str | None:
        n = self._length(_I16)
        if n < 0:
            return None
        try:
            return self._take(n).decode()
        except UnicodeDecodeError as e:
            raise RecordFormatError(f"a string that is not UTF-8: {e}") from None

    def string(self) -> str:
        s = self.nullable_string()
        if s is None:
            raise RecordFormatError("null where a string is required")
        return s

    def bytes_(self) -> bytes:
        n = self._length(_I32)
        if n < 0:
            raise RecordFormatError("null where bytes are required")
        return self._take(n)

    def array_length(self) -> int:
        n = self._length(_I32)
        if n < 0 or n > len(self.buf) - self.pos:  # each element takes at least a byte: a bound before any loop
            raise RecordFormatError(f"array of {n} elements in {len(self.buf) - self.pos} bytes")
        return n

    def tags(self) -> None:
        if self.flexible:
            for _ in range(self.uvarint()):
                self.uvarint()
                self._take(self.uvarint())

    def end(self) -> None:
        if self.pos != len(self.buf):
            raise RecordFormatError(f"{len(self.buf) - self.pos} bytes left after the record")


def decode_key(buf: bytes) -> OffsetKey | GroupKey:
    r = _Reader(buf, flexible=False)
    kind = r.int16()
    key: OffsetKey | GroupKey
    if kind in OFFSET_COMMIT_KEY_TYPES:
        key = OffsetKey(r.string(), r.string(), r.int32())
    elif kind == GROUP_METADATA_KEY_TYPE:
        key = GroupKey(r.string())
    else:
        raise RecordFormatError(f"key type {kind} is not an offset commit (0, 1) or group metadata (2)")
    r.end()
    return key


def _value_reader(buf: bytes) -> tuple[_Reader, int]:
    version = _Reader(buf[:2], flexible=False).int16()
    _check_version(version)
    r = _Reader(buf, flexible=version >= 4)
    r.pos = 2
    return r, version


def decode_offset_value(buf: bytes) -> OffsetValue:
    r, version = _value_reader(buf)
    offset = r.int64()
    leader_epoch = r.int32() if version >= 3 else -1
    metadata = r.string()
    commit_timestamp = r.int64()
    expire_timestamp = r.int64() if version == 1 else -1
    r.tags()
    r.end()
    return OffsetValue(offset, leader_epoch, metadata, commit_timestamp, expire_timestamp)


def decode_group_value(buf: bytes) -> GroupValue:
    r, version = _value_reader(buf)
    protocol_type = r.string()
    generation = r.int32()
    protocol = r.nullable_string()
    leader = r.nullable_string()
    state_timestamp = r.int64() if version >= 2 else -1
    members = []
    for _ in range(r.array_length()):
        member_id = r.string()
        instance_id = r.nullable_string() if version >= 3 else None
        client_id = r.string()
        client_host = r.string()
        rebalance_timeout = r.int32() if version >= 1 else -1
        session_timeout = r.int32()
        if version == 0:
            rebalance_timeout = session_timeout  # Kafka's reading of v0: the rebalance timeout was the session's
        members.append(
            MemberValue(
                member_id,
                instance_id,
                client_id,
                client_host,
                rebalance_timeout,
                session_timeout,
                r.bytes_(),
                r.bytes_(),
            )
        )
        r.tags()
    r.tags()
    r.end()
    return GroupValue(protocol_type, generation, protocol, leader, state_timestamp, tuple(members))


# The codec pieces the other record families of the topic (``consumer_records``) build on.
RecordWriter = _Writer
RecordReader = _Reader
