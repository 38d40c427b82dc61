"""The cleaner's key map shortcuts: a batch the map answers for (every record its key's latest, or none) is kept or
dropped without being read record by record, and short keys name themselves in the map. Each pass here is checked
against the same pass with the shortcut turned off: the cleaned files hold the same batches (headers and records;
not the same bytes, as gzip stamps the time it compressed)."""

from __future__ import annotations

import dataclasses
import random
from pathlib import Path
from typing import Any

import pytest

from rafka_shards.records.batch import Compression, scan_for_recovery, validate_batches
from rafka_shards.records.builder import Record, build_batch, decode_batch
from rafka_shards.storage import cleaner
from rafka_shards.storage.config import LogConfig
from rafka_shards.storage.log import PartitionLog
from tests.unit.test_cleaner import _everything

CONFIG = LogConfig(segment_bytes=2000, cleanup_policy="compact", delete_retention_ms=1000)


def _append(log: PartitionLog, records: list[Record], codec: Compression, producer_id: int = -1) -> None:
    buf = bytearray(
        build_batch(
            records,
            compression=codec,
            producer_id=producer_id,
            producer_epoch=0 if producer_id >= 0 else -1,
            base_sequence=0 if producer_id >= 0 else -1,
        )
    )
    log.append(buf, validate_batches(buf, max_batch_bytes=10**6), 0, now_ms=0)


def _random_log(directory: Path, seed: int, keyless: bool) -> PartitionLog:
    """Batches of 1-12 records over 30 keys (short ones and ones longer than a digest), a tombstone now and then,
    runs of one key (whole batches superseded later), a producer's batch, any codec."""
    rng = random.Random(seed)
    keys = [b"k%d" % i for i in range(20)] + [b"a-key-longer-than-sixteen-bytes-%d" % i for i in range(10)]
    log = PartitionLog.open(directory, CONFIG, 0)
    for n in range(60):
        codec = rng.choice(list(Compression))
        size = rng.randint(1, 12)
        same = rng.random() < 0.3
        first = rng.choice(keys)
        records = []
        for i in range(size):
            key: bytes | None = first if same else rng.choice(keys)
            if keyless and rng.random() < 0.02:
                key = None
            value = None if key is not None and rng.random() < 0.05 else b"v%d-%d" % (n, i)
            records.append(Record(key, value, 1000 + n))
        _append(log, records, codec, producer_id=7 if n == 5 else -1)
    log.flush_now()
    log.update_high_watermark(log.log_end_offset)
    log.flush_now()
    return log


def _cleaned_files(directory: Path) -> dict[str, list[tuple[object, ...]]]:
    """Every segment file's batches: the header but for its CRC and length, and the records."""
    out: dict[str, list[tuple[object, ...]]] = {}
    for path in sorted(directory.glob("*.log")):
        data = path.read_bytes()
        end, headers = scan_for_recovery(data)
        assert end == len(data)
        out[path.name] = [
            (
                dataclasses.replace(h, crc=0, batch_length=0),
                [
                    (d.offset, d.key, d.value, d.timestamp_ms)
                    for d in decode_batch(data[h.position : h.position + h.size])
                ],
            )
            for h in headers
        ]
    return out


def _two_passes(log: PartitionLog, entries_max: int) -> None:
    """A pass, more writes, a pass later than delete.retention.ms: the second one has a clean section."""
    for now_ms in (10, 5000):
        job = log.clean_job(now_ms, {7: 5}, map_entries_max=entries_max, io_bytes_per_s=0.0)
        assert job is not None
        log.swap_cleaned(cleaner.clean(job), now_ms)
        for i in range(10):  # a few more segments: the second pass has a dirty section again
            _append(log, [Record(b"k%d" % i, b"late", 1), Record(b"tail", b"t", 1)] * 20, Compression.NONE)
        log.flush_now()
        log.update_high_watermark(log.log_end_offset)
        log.flush_now()


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("entries_max", [1000, 12])  # 12: the map fills, and a pass cleans part of the dirty section
def test_the_shortcut_cleans_exactly_as_reading_every_record(
    tmp_path: Path, seed: int, entries_max: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    fast = _random_log(tmp_path / "fast", seed, keyless=seed % 4 == 0)
    slow = _random_log(tmp_path / "slow", seed, keyless=seed % 4 == 0)
    _two_passes(fast, entries_max)
    with monkeypatch.context() as m:
        m.setattr(cleaner.KeyMap, "live_records", lambda _self, _h: None)
        _two_passes(slow, entries_max)
    assert _cleaned_files(tmp_path / "fast") == _cleaned_files(tmp_path / "slow")
    assert _everything(fast) == _everything(slow)


def test_a_batch_the_map_answers_for_is_not_read_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Batch n holds the four keys of group n % 3: each batch wholly replaces the one three before it. The rewrite
    drops the old batches and keeps the newest of each group without reading a record of them again."""
    log = PartitionLog.open(tmp_path, CONFIG, 0)
    for n in range(30):
        _append(log, [Record(b"g%d-%d" % (n % 3, j), b"v%d" % n, 1) for j in range(4)], Compression.NONE)
    log.flush_now()
    log.update_high_watermark(log.log_end_offset)
    log.flush_now()
    job = log.clean_job(10, {}, map_entries_max=1000, io_bytes_per_s=0.0)
    assert job is not None
    keys = cleaner.build_offset_map(job, cleaner.CleanStats(), cleaner._Throttle(0.0))
    assert not keys.keyless and keys.end == job.end_offset
    assert set(keys.latest) == {b"g%d-%d" % (g, j) for g in range(3) for j in range(4)}  # short keys: themselves
    scans = 0
    real_scan = cleaner._scan

    def counting(*args: Any) -> cleaner.ScannedBatch:
        nonlocal scans
        scans += 1
        return real_scan(*args)

    monkeypatch.setattr(cleaner, "_scan", counting)
    result = cleaner.clean(job)
    dirty = [h for h in log.headers_from(0) if h.base_offset < job.end_offset]
    assert scans == len(dirty)  # the key map's one read of each batch; the rewrite read none
    assert result.stats.records_read == 4 * len(dirty) and result.stats.records_kept == 12
    log.swap_cleaned(result, 10)
    below = [row for row in _everything(log) if row[0] < job.end_offset]
    assert len(below) == 12 and len({key for _, key, _ in below}) == 12


def test_long_keys_are_digests_and_short_keys_themselves() -> None:
    assert cleaner._key_id(b"short") == b"short"
    assert cleaner._key_id(b"x" * 15) == b"x" * 15
    digest = cleaner._key_id(b"y" * 16)
    assert len(digest) == cleaner.DIGEST_BYTES and digest != b"y" * 16
