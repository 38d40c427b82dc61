"""Hand-written encoders for the hot responses: Produce (v3-11), Fetch (v4-16), Metadata (v0-12).

Runs in every shard process; sans-IO. kio serializes in Python field by field (measured here: ~1,100 Metadata
responses/s with 100 partitions, ~650 Fetch responses/s), too slow for the hot path. These encoders follow the JSON
specs field by field with the version conditions of each field (one encoder per API, no per-version copies), and are
tested byte-for-byte against kio with hypothesis. Tagged-field sections are always written EMPTY (librdkafka before
2.2, which Debian's kcat uses, misreads non-empty ones; kio writes default tagged fields the same way). Fetch passes
the record data through as the buffers it was given, for ``transport.writelines``: the data is never copied here.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from typing import NamedTuple

_I8 = struct.Struct(">b")
_I16 = struct.Struct(">h")
_I32 = struct.Struct(">i")
_I64 = struct.Struct(">q")
_PRODUCE_PARTITION = struct.Struct(">ihq")  # index, error_code, base_offset
_FETCH_PARTITION = struct.Struct(">ihqq")  # index, error_code, high_watermark, last_stable_offset
_BROKER_PORT = struct.Struct(">i")
_NULL_UUID = bytes(16)


class ProducePartitionResult(NamedTuple):
    partition: int
    error_code: int
    base_offset: int
    log_append_time_ms: int
    log_start_offset: int
    error_message: str | None = None


class FetchPartitionData(NamedTuple):
    partition: int
    error_code: int
    high_watermark: int
    last_stable_offset: int
    log_start_offset: int
    records: Sequence[bytes | memoryview] | None
    preferred_read_replica: int = -1


class MetadataPartition(NamedTuple):
    error_code: int
    partition: int
    leader_id: int
    leader_epoch: int
    replica_nodes: Sequence[int]
    isr_nodes: Sequence[int]
    offline_replicas: Sequence[int] = ()


class MetadataTopic(NamedTuple):
    error_code: int
    name: str | None
    topic_id: bytes
    is_internal: bool
    partitions: Sequence[MetadataPartition]
    topic_authorized_operations: int = -2147483648


class MetadataBroker(NamedTuple):
    node_id: int
    host: str
    port: int
    rack: str | None


PRODUCE_VERSIONS = (3, 11)
FETCH_VERSIONS = (4, 16)
METADATA_VERSIONS = (0, 12)


def supported_versions() -> dict[str, tuple[int, int]]:
    return {"produce": PRODUCE_VERSIONS, "fetch": FETCH_VERSIONS, "metadata": METADATA_VERSIONS}


def _uvarint(n: int) -> bytes:
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


class _Writer:
    """Appends Kafka primitives to a bytearray, classic or compact (flexible) encodings."""

    __slots__ = ("buf", "flexible")

    def __init__(self, flexible: bool) -> None:
        self.flexible = flexible
        self.buf = bytearray()

    def length(self, n: int) -> None:
        """Array length, or -1 for null: compact = uvarint(n + 1), classic = int32."""
        if self.flexible:
            self.buf += _uvarint(n + 1)
        else:
            self.buf += _I32.pack(n)

    def bytes_length(self, n: int) -> None:
        self.length(n)  # bytes/records lengths use the same encodings as arrays

    def string(self, s: str | None) -> None:
        if s is None:
            if self.flexible:
                self.buf += b"\x00"
            else:
                self.buf += b"\xff\xff"
            return
        data = s.encode()
        if self.flexible:
            self.buf += _uvarint(len(data) + 1)
        else:
            self.buf += _I16.pack(len(data))
        self.buf += data

    def int32s(self, values: Sequence[int]) -> None:
        self.length(len(values))
        if values:
            self.buf += struct.pack(f">{len(values)}i", *values)

    def tags(self) -> None:
        if self.flexible:
            self.buf += b"\x00"


def encode_produce_response(
    version: int, topics: Sequence[tuple[str, Sequence[ProducePartitionResult]]], throttle_time_ms: int = 0
) -> bytes:
    assert PRODUCE_VERSIONS[0] <= version <= PRODUCE_VERSIONS[1], version
    w = _Writer(version >= 9)
    buf = w.buf
    w.length(len(topics))
    for name, partitions in topics:
        w.string(name)
        w.length(len(partitions))
        for p in partitions:
            buf += _PRODUCE_PARTITION.pack(p.partition, p.error_code, p.base_offset)
            buf += _I64.pack(p.log_append_time_ms)
            if version >= 5:
                buf += _I64.pack(p.log_start_offset)
            if version >= 8:
                w.length(0)  # record_errors
                w.string(p.error_message)
            w.tags()
        w.tags()
    buf += _I32.pack(throttle_time_ms)
    w.tags()
    return bytes(buf)


def encode_fetch_response(
    version: int,
    topics: Sequence[tuple[str, bytes, Sequence[FetchPartitionData]]],
    throttle_time_ms: int = 0,
    error_code: int = 0,
    session_id: int = 0,
) -> list[bytes | memoryview]:
    assert FETCH_VERSIONS[0] <= version <= FETCH_VERSIONS[1], version
    w = _Writer(version >= 12)
    out: list[bytes | memoryview] = []
    buf = w.buf
    buf += _I32.pack(throttle_time_ms)
    if version >= 7:
        buf += _I16.pack(error_code)
        buf += _I32.pack(session_id)
    w.length(len(topics))
    for name, topic_id, partitions in topics:
        if version >= 13:
            buf += topic_id or _NULL_UUID
        else:
            w.string(name)
        w.length(len(partitions))
        for p in partitions:
            buf += _FETCH_PARTITION.pack(p.partition, p.error_code, p.high_watermark, p.last_stable_offset)
            if version >= 5:
                buf += _I64.pack(p.log_start_offset)
            w.length(-1)  # aborted_transactions: null (no transactions)
            if version >= 11:
                buf += _I32.pack(p.preferred_read_replica)
            if p.records is None:
                w.length(-1)
            else:
                size = sum(len(c) for c in p.records)
                w.bytes_length(size)
                if size:
                    # Hand the record buffers through untouched; continue in a fresh buffer.
                    out.append(bytes(buf))
                    out.extend(c for c in p.records if len(c))
                    buf.clear()
            w.tags()
        w.tags()
    w.tags()
    out.append(bytes(buf))
    return out


def encode_metadata_response(
    version: int,
    brokers: Sequence[MetadataBroker],
    cluster_id: str | None,
    controller_id: int,
    topics: Sequence[MetadataTopic],
    throttle_time_ms: int = 0,
    cluster_authorized_operations: int = -2147483648,
) -> bytes:
    assert METADATA_VERSIONS[0] <= version <= METADATA_VERSIONS[1], version
    w = _Writer(version >= 9)
    buf = w.buf
    if version >= 3:
        buf += _I32.pack(throttle_time_ms)
    w.length(len(brokers))
    for b in brokers:
        buf += _I32.pack(b.node_id)
        w.string(b.host)
        buf += _BROKER_PORT.pack(b.port)
        if version >= 1:
            w.string(b.rack)
        w.tags()
    if version >= 2:
        w.string(cluster_id)
    if version >= 1:
        buf += _I32.pack(controller_id)
    w.length(len(topics))
    for t in topics:
        buf += _I16.pack(t.error_code)
        w.string(t.name)
        if version >= 10:
            buf += t.topic_id or _NULL_UUID
        if version >= 1:
            buf += b"\x01" if t.is_internal else b"\x00"
        w.length(len(t.partitions))
        for p in t.partitions:
            buf += _I16.pack(p.error_code)
            buf += _I32.pack(p.partition)
            buf += _I32.pack(p.leader_id)
            if version >= 7:
                buf += _I32.pack(p.leader_epoch)
            w.int32s(p.replica_nodes)
            w.int32s(p.isr_nodes)
            if version >= 5:
                w.int32s(p.offline_replicas)
            w.tags()
        if version >= 8:
            buf += _I32.pack(t.topic_authorized_operations)
        w.tags()
    if 8 <= version <= 10:
        buf += _I32.pack(cluster_authorized_operations)
    w.tags()
    return bytes(buf)
