"""Building and decoding record batches record by record: for tests, benchmarks and ListOffsets by timestamp.

Runs in whichever process needs it; sans-IO. NOT on the produce or fetch path (those handle batches as units, see
``batch``). Record layout (DefaultRecord.java): length varint, attributes i8, timestampDelta varlong, offsetDelta
varint, key (varint length, -1 = null), value (same), header count varint, then per header a key (varint length,
UTF-8) and a value (varint length, -1 = null). Varints are zigzag-encoded.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass

import crc32c

from rafka_shards.model import ErrorCode, KafkaError
from rafka_shards.records.batch import BATCH_HEADER_SIZE, Compression, parse_header
from rafka_shards.records.compression import compress, decompress

Headers = tuple[tuple[str, bytes | None], ...]


@dataclass(frozen=True, slots=True)
class Record:
    key: bytes | None
    value: bytes | None
    timestamp_ms: int
    headers: Headers = ()


@dataclass(frozen=True, slots=True)
class DecodedRecord:
    offset: int
    timestamp_ms: int
    key: bytes | None
    value: bytes | None
    headers: Headers


def _zigzag(n: int) -> int:
    return (n << 1) ^ (n >> 63)


def _varint(n: int) -> bytes:
    z = _zigzag(n) & 0xFFFFFFFFFFFFFFFF
    out = bytearray()
    while z >= 0x80:
        out.append((z & 0x7F) | 0x80)
        z >>= 7
    out.append(z)
    return bytes(out)


def _bytes_field(b: bytes | None) -> bytes:
    return _varint(-1) if b is None else _varint(len(b)) + b


def _encode_record(r: Record, offset_delta: int, base_ts: int) -> bytes:
    body = bytearray(b"\x00")
    body += _varint(r.timestamp_ms - base_ts)
    body += _varint(offset_delta)
    body += _bytes_field(r.key)
    body += _bytes_field(r.value)
    body += _varint(len(r.headers))
    for hk, hv in r.headers:
        body += _bytes_field(hk.encode())
        body += _bytes_field(hv)
    return _varint(len(body)) + bytes(body)


def build_batch(
    records: Sequence[Record],
    *,
    base_offset: int = 0,
    compression: Compression = Compression.NONE,
    producer_id: int = -1,
    producer_epoch: int = -1,
    base_sequence: int = -1,
    partition_leader_epoch: int = -1,
) -> bytes:
    if not records:
        raise ValueError("a batch needs at least one record")
    base_ts = records[0].timestamp_ms
    max_ts = max(r.timestamp_ms for r in records)
    payload = b"".join(_encode_record(r, i, base_ts) for i, r in enumerate(records))
    if compression is not Compression.NONE:
        payload = compress(compression, payload)
    attributes = int(compression)
    after_crc = (
        struct.pack(
            ">hiqqqhii",
            attributes,
            len(records) - 1,
            base_ts,
            max_ts,
            producer_id,
            producer_epoch,
            base_sequence,
            len(records),
        )
        + payload
    )
    crc = crc32c.crc32c(after_crc)
    batch_length = 4 + 1 + 4 + len(after_crc)
    return struct.pack(">qiiBI", base_offset, batch_length, partition_leader_epoch, 2, crc) + after_crc


class _Reader:
    __slots__ = ("buf", "pos")

    def __init__(self, buf: bytes) -> None:
        self.buf = buf
        self.pos = 0

    def varint(self) -> int:
        z = 0
        shift = 0
        while True:
            if self.pos >= len(self.buf):
                raise KafkaError(ErrorCode.CORRUPT_MESSAGE, "record runs past the end of its batch")
            b = self.buf[self.pos]
            self.pos += 1
            z |= (b & 0x7F) << shift
            if not b & 0x80:
                return (z >> 1) ^ -(z & 1)
            shift += 7
            if shift > 63:
                raise KafkaError(ErrorCode.CORRUPT_MESSAGE, "varint longer than 10 bytes")

    def take(self) -> bytes | None:
        n = self.varint()
        if n < 0:
            return None
        if self.pos + n > len(self.buf):
            raise KafkaError(ErrorCode.CORRUPT_MESSAGE, "record field runs past the end of its batch")
        out = self.buf[self.pos : self.pos + n]
        self.pos += n
        return out


def decode_batch(batch: bytes | memoryview) -> list[DecodedRecord]:
    h = parse_header(batch)
    payload = bytes(batch[BATCH_HEADER_SIZE : h.size])
    if h.compression is not Compression.NONE:
        payload = decompress(h.compression, payload)
    r = _Reader(payload)
    out = []
    for _ in range(h.record_count):
        length = r.varint()
        end = r.pos + length
        r.pos += 1  # attributes
        ts = h.base_timestamp + r.varint()
        offset = h.base_offset + r.varint()
        key = r.take()
        value = r.take()
        headers = []
        for _ in range(r.varint()):
            hk = r.take()
            headers.append(((hk or b"").decode(), r.take()))
        if r.pos != end:
            raise KafkaError(ErrorCode.CORRUPT_MESSAGE, f"record at offset {offset} has a wrong length")
        if h.is_log_append_time:
            ts = h.max_timestamp
        out.append(DecodedRecord(offset, ts, key, value, tuple(headers)))
    return out


def decode_batches(buf: bytes | memoryview) -> list[DecodedRecord]:
    out: list[DecodedRecord] = []
    pos = 0
    view = memoryview(buf)
    while len(buf) - pos >= BATCH_HEADER_SIZE:
        h = parse_header(buf, pos)
        if pos + h.size > len(buf):
            break  # a fetch may end in a partial batch
        out.extend(decode_batch(view[pos : pos + h.size]))
        pos += h.size
    return out


def offset_for_timestamp_in_batch(batch: bytes | memoryview, target_ms: int) -> tuple[int, int] | None:
    """(offset, timestamp) of this batch's first record with timestamp >= target_ms, or None."""
    h = parse_header(batch)
    if h.max_timestamp < target_ms:
        return None
    for rec in decode_batch(batch):
        if rec.timestamp_ms >= target_ms:
            return rec.offset, rec.timestamp_ms
    return None
