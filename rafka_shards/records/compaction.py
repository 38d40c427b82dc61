"""Record batches as log compaction sees them: the keys inside a batch, and a batch rewritten with fewer records.

Runs in the cleaner (off the produce and fetch paths) and, for the keyless check, on the produce path of compacted
topics only; sans-IO. A batch is decompressed once and its records walked once, remembering where each one's bytes
lie. A rewritten batch keeps everything that places its records: the base offset, ``lastOffsetDelta`` (so the batch
still covers its whole offset range, as Kafka keeps it for the producer state), the base timestamp, the producer
id, epoch and base sequence, the partition leader epoch and the attributes (codec, timestamp type, transactional);
since each record's offset and timestamp are stored as deltas from the base, the bytes of a kept record are copied
verbatim. Only the record count, the max timestamp (kept for LogAppendTime) and the CRC change, and the payload is
compressed again with the batch's own codec.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import crc32c

from rafka_shards.model import ErrorCode, KafkaError
from rafka_shards.records.batch import BATCH_HEADER_SIZE, BatchHeader, Compression, parse_header
from rafka_shards.records.compression import compress, decompress

_AFTER_CRC = struct.Struct(">hiqqqhii")  # attributes .. recordCount
_BEFORE_CRC = struct.Struct(">qiiBI")  # baseOffset, batchLength, partitionLeaderEpoch, magic, crc


class KeyedRecord(NamedTuple):
    """One record of a batch: where its bytes lie in the decompressed payload, and what compaction looks at.

    A NamedTuple, not a frozen dataclass: the cleaner makes one per record it reads, and a frozen dataclass's
    ``__init__`` (an ``object.__setattr__`` per field) cost more than the rest of the scan of a record."""

    offset: int
    timestamp_ms: int
    key: bytes | None
    tombstone: bool  # a null value: "delete this key"
    start: int
    end: int


@dataclass(frozen=True, slots=True)
class ScannedBatch:
    header: BatchHeader
    payload: bytes  # decompressed
    records: tuple[KeyedRecord, ...]


def _corrupt(message: str) -> KafkaError:
    return KafkaError(ErrorCode.CORRUPT_MESSAGE, message)


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    """The zigzag varint at ``pos`` and the position after it. One- and two-byte varints (every length, delta and
    key size of a record up to 8 KiB) take the short way; IndexError past the end of ``buf``."""
    b = buf[pos]
    if b < 0x80:
        return (b >> 1) ^ -(b & 1), pos + 1
    c = buf[pos + 1]
    if c < 0x80:
        z = (b & 0x7F) | (c << 7)
        return (z >> 1) ^ -(z & 1), pos + 2
    z = 0
    shift = 0
    while True:
        b = buf[pos]
        pos += 1
        z |= (b & 0x7F) << shift
        if not b & 0x80:
            return (z >> 1) ^ -(z & 1), pos
        shift += 7
        if shift > 63:
            raise _corrupt("varint longer than 10 bytes")


def scan_batch(batch: bytes | memoryview) -> ScannedBatch:
    """The batch's header, decompressed payload and records (offset, timestamp, key, tombstone, byte range).
    Raises KafkaError(CORRUPT_MESSAGE) for a record that does not parse."""
    h = parse_header(batch)
    payload = bytes(batch[BATCH_HEADER_SIZE : h.size])
    if h.compression is not Compression.NONE:
        payload = decompress(h.compression, payload)
    try:
        records, pos = _records(h, payload)
    except IndexError:
        raise _corrupt("record runs past the end of its batch") from None
    if pos != len(payload):
        raise _corrupt(f"{len(payload) - pos} bytes after the batch's last record")
    return ScannedBatch(h, payload, tuple(records))


def _records(h: BatchHeader, payload: bytes) -> tuple[list[KeyedRecord], int]:
    """Walk the batch's records once (the cleaner's hot loop: per-record work is kept to the fields it needs);
    the records and where the walk ended. IndexError when a field runs past the payload."""
    records: list[KeyedRecord] = []
    pos = 0
    size = len(payload)
    base_offset, base_timestamp = h.base_offset, h.base_timestamp
    append_time = h.max_timestamp if h.is_log_append_time else None
    for _ in range(h.record_count):
        start = pos
        length, pos = _varint(payload, pos)
        end = pos + length
        if length < 0 or end > size:
            raise _corrupt(f"record of {length} bytes runs past the end of its batch")
        ts_delta, pos = _varint(payload, pos + 1)  # after the attributes byte
        offset_delta, pos = _varint(payload, pos)
        key_length, pos = _varint(payload, pos)
        key = None
        if key_length >= 0:
            key = payload[pos : pos + key_length]
            pos += key_length
        value_length, pos = _varint(payload, pos)
        if pos > end or pos + max(value_length, 0) > end:
            raise _corrupt("record fields run past the record's length")
        timestamp = base_timestamp + ts_delta if append_time is None else append_time
        records.append(KeyedRecord(base_offset + offset_delta, timestamp, key, value_length < 0, start, end))
        pos = end
    return records, pos


def rewrite_batch(scanned: ScannedBatch, kept: Sequence[KeyedRecord]) -> bytes:
    """``scanned`` with only the records ``kept`` (a subsequence of its records, in order), everything that places
    them unchanged. ``kept`` may be empty: an empty batch keeps an idempotent producer's last sequence in the log."""
    h = scanned.header
    payload = b"".join(scanned.payload[r.start : r.end] for r in kept)
    if h.compression is not Compression.NONE:
        payload = compress(h.compression, payload)
    keep_max = h.is_log_append_time or not kept
    max_timestamp = h.max_timestamp if keep_max else max(r.timestamp_ms for r in kept)
    after_crc = (
        _AFTER_CRC.pack(
            h.attributes,
            h.last_offset_delta,
            h.base_timestamp,
            max_timestamp,
            h.producer_id,
            h.producer_epoch,
            h.base_sequence,
            len(kept),
        )
        + payload
    )
    batch_length = 4 + 1 + 4 + len(after_crc)
    head = _BEFORE_CRC.pack(h.base_offset, batch_length, h.partition_leader_epoch, 2, crc32c.crc32c(after_crc))
    return head + after_crc


def first_keyless_record(buf: bytes | bytearray | memoryview, headers: Sequence[BatchHeader]) -> int | None:
    """The index (from 0, over all batches) of the first record without a key, or None: a compacted topic refuses
    such records (Kafka's INVALID_RECORD), since compaction keeps the latest value per key."""
    index = 0
    with memoryview(buf) as view:
        for h in headers:
            scanned = scan_batch(view[h.position : h.position + h.size])
            for r in scanned.records:
                if r.key is None:
                    return index
                index += 1
    return None
