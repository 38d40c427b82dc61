"""Kafka record batches (magic v2) handled as units: parse the 61-byte header, validate, patch offsets in place.

Runs in every shard process; sans-IO. The produce path touches each batch once, through its header: one struct call,
one CRC32C over the batch (C code, no copy: a memoryview slice), and two ``pack_into`` calls to set the base offset
and the partition leader epoch, both of which lie outside the CRC (KIP-98 moved them there for exactly this). No
record is ever decoded here. Layout (DefaultRecordBatch.java):

    baseOffset i64 | batchLength i32 | partitionLeaderEpoch i32 | magic i8 | crc u32 | attributes i16 |
    lastOffsetDelta i32 | baseTimestamp i64 | maxTimestamp i64 | producerId i64 | producerEpoch i16 |
    baseSequence i32 | recordCount i32 | records...

The CRC covers everything from attributes to the end of the batch.
"""

from __future__ import annotations

import enum
import struct
from collections.abc import Sequence
from dataclasses import dataclass

import crc32c

from rafka_shards.model import ErrorCode, KafkaError

BATCH_HEADER_SIZE = 61
LOG_OVERHEAD = 12  # baseOffset + batchLength: the part of the header outside batchLength
_CRC_START = 21
_MIN_BATCH_LENGTH = BATCH_HEADER_SIZE - LOG_OVERHEAD  # 49
_HEADER = struct.Struct(">qiiBIhiqqqhii")
_LENGTH = struct.Struct(">qi")
_OFFSET_PATCH = struct.Struct(">q")
_EPOCH_PATCH = struct.Struct(">i")
_ATTRIBUTES = struct.Struct(">h")
_MAX_TS = struct.Struct(">q")
_CRC = struct.Struct(">I")

_TIMESTAMP_TYPE_BIT = 0x08
_TRANSACTIONAL_BIT = 0x10
_CONTROL_BIT = 0x20
_COMPRESSION_MASK = 0x07


class Compression(enum.IntEnum):
    NONE = 0
    GZIP = 1
    SNAPPY = 2
    LZ4 = 3
    ZSTD = 4


@dataclass(frozen=True, slots=True)
class BatchHeader:
    position: int
    base_offset: int
    batch_length: int
    partition_leader_epoch: int
    magic: int
    crc: int
    attributes: int
    last_offset_delta: int
    base_timestamp: int
    max_timestamp: int
    producer_id: int
    producer_epoch: int
    base_sequence: int
    record_count: int

    @property
    def size(self) -> int:
        return self.batch_length + LOG_OVERHEAD

    @property
    def last_offset(self) -> int:
        return self.base_offset + self.last_offset_delta

    @property
    def next_offset(self) -> int:
        return self.base_offset + self.last_offset_delta + 1

    @property
    def compression(self) -> Compression:
        return Compression(self.attributes & _COMPRESSION_MASK)

    @property
    def is_log_append_time(self) -> bool:
        return bool(self.attributes & _TIMESTAMP_TYPE_BIT)

    @property
    def is_transactional(self) -> bool:
        return bool(self.attributes & _TRANSACTIONAL_BIT)

    @property
    def is_control(self) -> bool:
        return bool(self.attributes & _CONTROL_BIT)


Buffer = bytes | bytearray | memoryview


def parse_header(buf: Buffer, position: int = 0) -> BatchHeader:
    if len(buf) - position < BATCH_HEADER_SIZE:
        raise KafkaError(
            ErrorCode.CORRUPT_MESSAGE,
            f"batch at byte {position}: {len(buf) - position} bytes left, a batch header needs {BATCH_HEADER_SIZE}",
        )
    return BatchHeader(position, *_HEADER.unpack_from(buf, position))


def _crc_ok(view: memoryview, h: BatchHeader) -> bool:
    end = h.position + h.size
    return bool(crc32c.crc32c(view[h.position + _CRC_START : end]) == h.crc)


def validate_batches(buf: Buffer, *, max_batch_bytes: int, from_leader: bool = False) -> list[BatchHeader]:
    """Every batch of one partition's ``records``, validated; KafkaError (and no partial result) on any fault.

    ``from_leader``: batches a follower fetched from its leader's log, as the leader stored them: a batch log
    compaction rewrote holds fewer records than its offset range (none at all when only an idempotent producer's
    sequence was kept), and control batches are the leader's own."""
    end = len(buf)
    if end == 0:
        raise KafkaError(ErrorCode.CORRUPT_MESSAGE, "records are empty: a produce needs at least one batch")
    headers: list[BatchHeader] = []
    pos = 0
    with memoryview(buf) as view:
        while pos < end:
            if end - pos < LOG_OVERHEAD:
                raise KafkaError(ErrorCode.CORRUPT_MESSAGE, f"{end - pos} trailing bytes at byte {pos}")
            _, batch_length = _LENGTH.unpack_from(buf, pos)
            if batch_length < _MIN_BATCH_LENGTH:
                raise KafkaError(
                    ErrorCode.CORRUPT_MESSAGE,
                    f"batch at byte {pos}: length {batch_length} is below {_MIN_BATCH_LENGTH}",
                )
            size = batch_length + LOG_OVERHEAD
            if size > end - pos:
                raise KafkaError(
                    ErrorCode.CORRUPT_MESSAGE,
                    f"batch at byte {pos}: length {batch_length} runs past the end of the records ({end - pos} left)",
                )
            h = parse_header(buf, pos)
            if h.magic != 2:
                raise KafkaError(
                    ErrorCode.UNSUPPORTED_FOR_MESSAGE_FORMAT,
                    f"batch at byte {pos}: magic {h.magic}; only record batch v2 (magic 2) is accepted",
                )
            if size > max_batch_bytes:
                raise KafkaError(
                    ErrorCode.MESSAGE_TOO_LARGE,
                    f"batch at byte {pos} is {size} bytes; max.message.bytes is {max_batch_bytes}",
                )
            if not _crc_ok(view, h):
                raise KafkaError(ErrorCode.CORRUPT_MESSAGE, f"batch at byte {pos}: CRC32C mismatch")
            if h.attributes & _COMPRESSION_MASK > Compression.ZSTD:
                raise KafkaError(
                    ErrorCode.UNSUPPORTED_COMPRESSION_TYPE,
                    f"batch at byte {pos}: compression codec {h.attributes & _COMPRESSION_MASK}",
                )
            if h.is_control and not from_leader:
                raise KafkaError(ErrorCode.INVALID_RECORD, f"batch at byte {pos}: clients cannot write control batches")
            if from_leader:
                counts_ok = 0 <= h.record_count <= h.last_offset_delta + 1
            else:
                counts_ok = h.record_count >= 1 and h.record_count == h.last_offset_delta + 1
            if not counts_ok:
                raise KafkaError(
                    ErrorCode.CORRUPT_MESSAGE,
                    f"batch at byte {pos}: record count {h.record_count} does not match last offset delta "
                    f"{h.last_offset_delta}",
                )
            headers.append(h)
            pos += size
    return headers


def assign_offsets(
    buf: bytearray,
    headers: Sequence[BatchHeader],
    base_offset: int,
    leader_epoch: int,
    log_append_time_ms: int | None = None,
) -> int:
    """Patch base offsets (consecutive from ``base_offset``) and leader epochs in place; return the next offset.

    With ``log_append_time_ms`` (topic config message.timestamp.type=LogAppendTime) the timestamp type bit and
    maxTimestamp change too, which are inside the CRC, so the CRC is recomputed, as Kafka does.
    """
    offset = base_offset
    with memoryview(buf) as view:
        for h in headers:
            pos = h.position
            _OFFSET_PATCH.pack_into(buf, pos, offset)
            _EPOCH_PATCH.pack_into(buf, pos + 12, leader_epoch)
            if log_append_time_ms is not None:
                _ATTRIBUTES.pack_into(buf, pos + 21, h.attributes | _TIMESTAMP_TYPE_BIT)
                _MAX_TS.pack_into(buf, pos + 35, log_append_time_ms)
                _CRC.pack_into(buf, pos + 17, crc32c.crc32c(view[pos + _CRC_START : pos + h.size]))
            offset += h.last_offset_delta + 1
    return offset


def scan_for_recovery(buf: Buffer, start: int = 0) -> tuple[int, list[BatchHeader]]:
    """Walk batches from ``start`` while they are whole and valid; return (end of the valid prefix, headers)."""
    end = len(buf)
    pos = start
    headers: list[BatchHeader] = []
    with memoryview(buf) as view:
        while end - pos >= BATCH_HEADER_SIZE:
            _, batch_length = _LENGTH.unpack_from(buf, pos)
            if batch_length < _MIN_BATCH_LENGTH or batch_length + LOG_OVERHEAD > end - pos:
                break
            h = BatchHeader(pos, *_HEADER.unpack_from(buf, pos))
            if h.magic != 2 or not _crc_ok(view, h) or h.last_offset_delta < 0:
                break
            if headers and h.base_offset < headers[-1].next_offset:
                break  # offsets increase within a segment (with gaps where log compaction removed batches)
            headers.append(h)
            pos += h.size
    return pos, headers


def count_batches(buf: bytes | memoryview) -> int:
    """Batches in a buffer of whole batches (a fetch result), by their length fields only."""
    count = 0
    pos = 0
    end = len(buf)
    while end - pos >= LOG_OVERHEAD:
        _, length = _LENGTH.unpack_from(buf, pos)
        pos += LOG_OVERHEAD + length
        count += 1
    return count
