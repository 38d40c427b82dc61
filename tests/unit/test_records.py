"""Record batches: round trips through every codec, cross-checked with kafka-python, and every corruption caught."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from kafka.record.default_records import DefaultRecordBatch, DefaultRecordBatchBuilder

from rafka_shards.model import ErrorCode, KafkaError
from rafka_shards.records.batch import Compression, assign_offsets, scan_for_recovery, validate_batches
from rafka_shards.records.builder import (
    Record,
    build_batch,
    decode_batch,
    decode_batches,
    offset_for_timestamp_in_batch,
)

records_st = st.lists(
    st.builds(
        Record,
        key=st.none() | st.binary(max_size=20),
        value=st.none() | st.binary(max_size=200),
        timestamp_ms=st.integers(0, 2**41),
        headers=st.lists(st.tuples(st.text(max_size=5), st.none() | st.binary(max_size=5)), max_size=3).map(tuple),
    ),
    min_size=1,
    max_size=20,
)


@settings(max_examples=60, deadline=None)
@given(records_st, st.sampled_from(list(Compression)))
def test_round_trip(records: list[Record], codec: Compression) -> None:
    batch = build_batch(records, compression=codec)
    (h,) = validate_batches(batch, max_batch_bytes=10**7)
    assert h.compression is codec and h.record_count == len(records)
    decoded = decode_batch(batch)
    assert [(d.key, d.value, d.timestamp_ms, d.headers) for d in decoded] == [
        (r.key, r.value, r.timestamp_ms, r.headers) for r in records
    ]
    assert [d.offset for d in decoded] == list(range(len(records)))


@pytest.mark.parametrize("codec", [0, 1, 2, 3, 4])
def test_kafka_python_batches_validate_and_decode(codec: int) -> None:
    builder = DefaultRecordBatchBuilder(
        magic=2,
        compression_type=codec,
        is_transactional=False,
        producer_id=-1,
        producer_epoch=-1,
        base_sequence=-1,
        batch_size=1 << 20,
    )
    for i in range(10):
        builder.append(i, timestamp=1000 + i, key=b"k%d" % i, value=b"v" * i, headers=[("h", b"x")])
    batch = bytes(builder.build())
    validate_batches(batch, max_batch_bytes=10**7)
    decoded = decode_batch(batch)
    assert [(d.offset, d.key, d.value, d.timestamp_ms, d.headers) for d in decoded] == [
        (i, b"k%d" % i, b"v" * i, 1000 + i, (("h", b"x"),)) for i in range(10)
    ]


def test_our_batches_read_by_kafka_python() -> None:
    records = [Record(b"k", b"value-%d" % i, 5000 + i, (("a", None),)) for i in range(5)]
    batch = bytearray(build_batch(records, compression=Compression.LZ4))
    headers = validate_batches(batch, max_batch_bytes=10**7)
    assign_offsets(batch, headers, 100, 3)
    theirs = DefaultRecordBatch(bytes(batch))
    assert theirs.validate_crc()
    got = [(r.offset, r.value, r.timestamp) for r in theirs]
    assert got == [(100 + i, b"value-%d" % i, 5000 + i) for i in range(5)]


def test_every_byte_flip_in_crc_range_is_caught() -> None:
    batch = build_batch([Record(b"k", b"v" * 30, 1)])
    for i in range(21, len(batch)):
        bad = bytearray(batch)
        bad[i] ^= 0x01
        with pytest.raises(KafkaError) as e:
            validate_batches(bad, max_batch_bytes=10**6)
        assert e.value.code in (
            ErrorCode.CORRUPT_MESSAGE,
            ErrorCode.UNSUPPORTED_COMPRESSION_TYPE,
            ErrorCode.INVALID_RECORD,
        )


def test_every_truncation_is_caught() -> None:
    two = build_batch([Record(None, b"a", 1)]) + build_batch([Record(None, b"b", 2)])
    for n in range(len(two)):
        if n == len(two) // 2:
            continue  # exactly one whole batch is valid
        with pytest.raises(KafkaError) as e:
            validate_batches(two[:n], max_batch_bytes=10**6)
        assert e.value.code is ErrorCode.CORRUPT_MESSAGE


def test_bad_magic_lengths_control_and_size() -> None:
    batch = bytearray(build_batch([Record(None, b"x" * 100, 1)]))
    bad = bytearray(batch)
    bad[16] = 1
    with pytest.raises(KafkaError) as e:
        validate_batches(bad, max_batch_bytes=10**6)
    assert e.value.code is ErrorCode.UNSUPPORTED_FOR_MESSAGE_FORMAT
    for length in (-1, 0, 48, 2**31 - 1):
        bad = bytearray(batch)
        bad[8:12] = length.to_bytes(4, "big", signed=True)
        with pytest.raises(KafkaError) as e:
            validate_batches(bad, max_batch_bytes=10**6)
        assert e.value.code is ErrorCode.CORRUPT_MESSAGE
    with pytest.raises(KafkaError) as e:
        validate_batches(batch, max_batch_bytes=50)
    assert e.value.code is ErrorCode.MESSAGE_TOO_LARGE


def test_assign_offsets_patches_outside_the_crc() -> None:
    buf = bytearray(build_batch([Record(None, b"a", 1)] * 3) + build_batch([Record(None, b"b", 2)] * 2))
    headers = validate_batches(buf, max_batch_bytes=10**6)
    assert assign_offsets(buf, headers, 40, 7) == 45
    patched = validate_batches(buf, max_batch_bytes=10**6)  # CRC still valid
    assert [(h.base_offset, h.partition_leader_epoch) for h in patched] == [(40, 7), (43, 7)]
    assert [d.offset for d in decode_batches(buf)] == [40, 41, 42, 43, 44]
    # LogAppendTime rewrites maxTimestamp and the CRC.
    assign_offsets(buf, headers, 0, 1, log_append_time_ms=999)
    h = validate_batches(buf, max_batch_bytes=10**6)[0]
    assert h.is_log_append_time and h.max_timestamp == 999
    assert {d.timestamp_ms for d in decode_batches(buf)} == {999}


def test_scan_for_recovery_keeps_the_valid_prefix() -> None:
    good = bytearray()
    next_offset = 0
    for i in range(4):
        b = bytearray(build_batch([Record(None, b"x%d" % i, i)] * 2))
        assign_offsets(b, validate_batches(b, max_batch_bytes=10**6), next_offset, 0)
        next_offset += 2
        good += b
    for tail in (b"", b"\x00" * 5, b"garbage" * 20, bytes(good[:70])):
        end, headers = scan_for_recovery(bytes(good) + tail)
        assert end == len(good) and len(headers) == 4
    torn = bytes(good[:-3])
    end, headers = scan_for_recovery(torn)
    assert len(headers) == 3 and end == headers[-1].position + headers[-1].size


@pytest.mark.parametrize("codec", list(Compression))
def test_offset_for_timestamp_in_batch(codec: Compression) -> None:
    batch = build_batch([Record(None, b"v", ts) for ts in (10, 30, 20, 40)], base_offset=100, compression=codec)
    assert offset_for_timestamp_in_batch(batch, 5) == (100, 10)
    assert offset_for_timestamp_in_batch(batch, 25) == (101, 30)
    assert offset_for_timestamp_in_batch(batch, 40) == (103, 40)
    assert offset_for_timestamp_in_batch(batch, 41) is None
