"""Log compaction's pure parts: batches scanned for keys and rewritten with fewer records (every codec)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rafka_shards.model import ErrorCode, KafkaError
from rafka_shards.records.batch import Compression, parse_header, scan_for_recovery, validate_batches
from rafka_shards.records.builder import Record, build_batch, decode_batch
from rafka_shards.records.compaction import first_keyless_record, rewrite_batch, scan_batch

CODECS = list(Compression)


@pytest.mark.parametrize("codec", CODECS, ids=lambda c: c.name)
def test_a_rewritten_batch_keeps_its_offsets_timestamps_and_producer_state(codec: Compression) -> None:
    records = [Record(b"k%d" % (i % 3), None if i == 4 else b"v%d" % i, 1000 + i, (("h", b"x"),)) for i in range(6)]
    batch = build_batch(
        records,
        base_offset=100,
        compression=codec,
        producer_id=7,
        producer_epoch=2,
        base_sequence=40,
        partition_leader_epoch=5,
    )
    scanned = scan_batch(batch)
    assert [(r.offset, r.key, r.tombstone, r.timestamp_ms) for r in scanned.records] == [
        (100 + i, b"k%d" % (i % 3), i == 4, 1000 + i) for i in range(6)
    ]
    kept = [scanned.records[1], scanned.records[4]]
    out = rewrite_batch(scanned, kept)
    end, headers = scan_for_recovery(out)
    assert end == len(out) and len(headers) == 1  # whole, CRC right
    h = headers[0]
    before = parse_header(batch)
    assert (h.base_offset, h.last_offset_delta, h.base_timestamp, h.producer_id, h.producer_epoch) == (
        before.base_offset,
        before.last_offset_delta,
        before.base_timestamp,
        7,
        2,
    )
    assert (h.base_sequence, h.partition_leader_epoch, h.compression, h.record_count) == (40, 5, codec, 2)
    assert h.max_timestamp == 1004
    decoded = decode_batch(out)
    assert [(d.offset, d.key, d.value, d.timestamp_ms, d.headers) for d in decoded] == [
        (101, b"k1", b"v1", 1001, (("h", b"x"),)),
        (104, b"k1", None, 1004, (("h", b"x"),)),
    ]


def test_an_empty_rewrite_keeps_the_batch_header_for_the_producer() -> None:
    batch = build_batch([Record(b"a", b"1", 5)], base_offset=9, producer_id=3, producer_epoch=0, base_sequence=11)
    out = rewrite_batch(scan_batch(batch), [])
    end, headers = scan_for_recovery(out)
    assert end == len(out) and headers[0].record_count == 0 and headers[0].base_sequence == 11
    assert headers[0].next_offset == 10 and decode_batch(out) == []


def test_keyless_records_are_found_in_any_batch_and_codec() -> None:
    keyed = build_batch([Record(b"a", b"1", 0), Record(b"b", b"2", 0)], compression=Compression.LZ4)
    keyless = build_batch([Record(b"c", b"3", 0), Record(None, b"4", 0)], compression=Compression.ZSTD)
    buf = bytearray(keyed + keyless)
    assert first_keyless_record(buf, validate_batches(buf, max_batch_bytes=10**6)) == 3
    only_keyed = bytearray(keyed)
    assert first_keyless_record(only_keyed, validate_batches(only_keyed, max_batch_bytes=10**6)) is None


def test_a_batch_whose_records_do_not_parse_is_corrupt() -> None:
    batch = bytearray(build_batch([Record(b"a", b"12345", 0)]))
    batch[-7] = 0x7E  # the value length (zigzag 63) now runs past the record
    with pytest.raises(KafkaError) as e:
        scan_batch(bytes(batch))
    assert e.value.code is ErrorCode.CORRUPT_MESSAGE


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.tuples(st.sampled_from([b"a", b"b", b"c", None]), st.booleans()), min_size=1, max_size=20),
    st.sampled_from(CODECS),
    st.data(),
)
def test_any_subsequence_round_trips(
    spec: list[tuple[bytes | None, bool]], codec: Compression, data: st.DataObject
) -> None:
    records = [Record(k, None if tomb else b"v%d" % i, 10 * i) for i, (k, tomb) in enumerate(spec)]
    batch = build_batch(records, base_offset=1000, compression=codec)
    scanned = scan_batch(batch)
    mask = data.draw(st.lists(st.booleans(), min_size=len(spec), max_size=len(spec)))
    kept = [r for r, keep in zip(scanned.records, mask, strict=True) if keep]
    out = rewrite_batch(scanned, kept)
    expected = [d for d, keep in zip(decode_batch(batch), mask, strict=True) if keep]
    assert decode_batch(out) == expected
    assert scan_for_recovery(out)[0] == len(out)
