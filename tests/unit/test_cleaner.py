"""The log cleaner on real partition logs: a pass keeps the latest record of every key at its offset, tombstones
live for delete.retention.ms after the first pass, producer state survives, and the swap is crash-safe."""

from __future__ import annotations

import dataclasses
import types
from collections.abc import Sequence
from pathlib import Path
from typing import cast

import pytest

from rafka_shards.config import BrokerConfig
from rafka_shards.model import KafkaError, TopicPartition
from rafka_shards.records.batch import Compression, validate_batches
from rafka_shards.records.builder import Record, build_batch, decode_batches
from rafka_shards.shard.cleaner import LogCleaner
from rafka_shards.shard.partition import Partition
from rafka_shards.storage import cleaner
from rafka_shards.storage.config import LogConfig
from rafka_shards.storage.log import PartitionLog

CONFIG = LogConfig(segment_bytes=300, cleanup_policy="compact", delete_retention_ms=1000)
LIMITS = {"map_entries_max": 10_000, "io_bytes_per_s": 0.0}


def _append(
    log: PartitionLog,
    records: list[tuple[bytes, bytes | None]],
    codec: Compression = Compression.NONE,
    producer: tuple[int, int, int] = (-1, -1, -1),
) -> None:
    pid, epoch, seq = producer
    buf = bytearray(
        build_batch(
            [Record(k, v, 1000) for k, v in records],
            compression=codec,
            producer_id=pid,
            producer_epoch=epoch,
            base_sequence=seq,
        )
    )
    log.append(buf, validate_batches(buf, max_batch_bytes=10**6), 0, now_ms=0)


def _everything(log: PartitionLog) -> list[tuple[int, bytes | None, bytes | None]]:
    out = []
    offset = log.log_start_offset
    while offset < log.high_watermark:
        r = log.read(offset, 10**6, log.high_watermark, min_one_batch=True)
        if not r.data:
            break
        out += [(d.offset, d.key, d.value) for d in decode_batches(r.data) if d.offset >= offset]
        offset = r.next_offset
    return out


def _latest(rows: list[tuple[int, bytes | None, bytes | None]]) -> dict[bytes | None, tuple[int, bytes | None]]:
    latest: dict[bytes | None, tuple[int, bytes | None]] = {}
    for offset, key, value in rows:
        latest[key] = (offset, value)
    return latest


def _pass(log: PartitionLog, now_ms: int, producers: dict[int, int] | None = None) -> cleaner.CleanResult | None:
    job = log.clean_job(now_ms, producers or {}, **LIMITS)
    if job is None:
        return None
    result = cleaner.clean(job)
    log.swap_cleaned(result, now_ms)
    return result


def _filled(tmp_path: Path, codec: Compression = Compression.NONE) -> tuple[PartitionLog, list]:  # type: ignore[type-arg]
    log = PartitionLog.open(tmp_path, CONFIG, 0)
    for round_ in range(8):
        _append(log, [(b"k%d" % (i % 5), b"v%d-%d" % (round_, i)) for i in range(4)], codec)
    _append(log, [(b"k1", None)], codec)  # a tombstone
    for i in range(6):
        _append(log, [(b"tail", b"t%d" % i)], codec)  # fills more segments, so the above can be cleaned
    log.flush_now()
    log.update_high_watermark(log.log_end_offset)
    log.flush_now()
    return log, _everything(log)


@pytest.mark.parametrize("codec", list(Compression), ids=lambda c: c.name)
def test_a_pass_keeps_the_latest_record_of_every_key_at_its_offset(tmp_path: Path, codec: Compression) -> None:
    log, before = _filled(tmp_path, codec)
    assert len(log.segments) > 3
    end = log.cleanable_end(now_ms=10)
    result = _pass(log, now_ms=10)
    assert result is not None and result.groups and result.cleaned_to == end
    after = _everything(log)
    assert len(after) < len(before)
    cleaned_part = [row for row in before if row[0] < end]
    expected = _latest(cleaned_part)
    kept_below = [row for row in after if row[0] < end]
    assert _latest(kept_below) == expected  # every key's latest value, tombstone included, at its offset
    assert len(kept_below) == len(expected)  # and nothing else below the cleanable end
    assert [row for row in after if row[0] >= end] == [row for row in before if row[0] >= end]
    offsets = [row[0] for row in after]
    assert offsets == sorted(offsets) and set(offsets) <= {row[0] for row in before}
    log.close()
    reopened = PartitionLog.open(tmp_path, CONFIG, 0)  # gaps survive recovery
    reopened.update_high_watermark(reopened.log_end_offset)
    assert _everything(reopened) == after
    assert reopened.log_end_offset == log.log_end_offset


@pytest.mark.parametrize("follower_policy", ["compact", "delete"])
def test_a_follower_copies_a_compacted_leaders_log_with_its_gaps(tmp_path: Path, follower_policy: str) -> None:
    """Whatever the policy is now: a log compacted under ``compact`` keeps its gaps after a switch to ``delete``,
    and a follower that catches up later must copy them (as Kafka's followers do), not stop replicating."""
    leader, _ = _filled(tmp_path / "leader", Compression.NONE)
    assert _pass(leader, now_ms=10) is not None
    leader.update_high_watermark(leader.log_end_offset)
    follower = PartitionLog.open(tmp_path / "follower", dataclasses.replace(CONFIG, cleanup_policy=follower_policy), 0)
    offset = 0
    while offset < leader.log_end_offset:
        r = leader.read(offset, 1000, leader.high_watermark, min_one_batch=True)
        buf = bytearray(r.data)
        follower.append_replica(buf, validate_batches(buf, max_batch_bytes=10**6, from_leader=True), 0)
        offset = r.next_offset
    follower.update_high_watermark(follower.log_end_offset)
    assert follower.log_end_offset == leader.log_end_offset
    assert _everything(follower) == _everything(leader)
    stale = bytearray(leader.read(0, 1000, leader.high_watermark, min_one_batch=True).data)
    with pytest.raises(KafkaError):  # below the end is never accepted
        follower.append_replica(stale, validate_batches(stale, max_batch_bytes=10**6, from_leader=True), 0)


def test_min_compaction_lag_keeps_young_segments_out_of_a_pass(tmp_path: Path) -> None:
    log, before = _filled(tmp_path)  # every record has timestamp 1000
    log.update_config(dataclasses.replace(CONFIG, min_compaction_lag_ms=500))
    assert log.cleanable_end(now_ms=1200) == 0  # 200 ms old: not yet
    assert _pass(log, now_ms=1200) is None and _everything(log) == before
    assert log.cleanable_end(now_ms=1600) == log.segments[-1].base_offset  # 600 ms old: all but the active one
    assert _pass(log, now_ms=1600) is not None and len(_everything(log)) < len(before)


def test_max_compaction_lag_makes_the_cleaner_take_a_log_below_its_dirty_ratio(tmp_path: Path) -> None:
    log, _ = _filled(tmp_path)
    assert _pass(log, now_ms=10) is not None
    for i in range(3):  # a little new dirt: a dirty ratio well below 0.9
        _append(log, [(b"k%d" % i, b"again")])
    _append(log, [(b"tail", b"t")] * 4)
    log.flush_now()
    log.update_high_watermark(log.log_end_offset)
    partitions = {TopicPartition("t", 0): cast(Partition, types.SimpleNamespace(log=log))}

    def chosen(max_lag_ms: int, now_ms: int) -> bool:
        log.update_config(dataclasses.replace(CONFIG, min_cleanable_dirty_ratio=0.9, max_compaction_lag_ms=max_lag_ms))
        ratio, dirty, _ = log.dirty_ratio(now_ms)
        assert 0 < ratio < 0.9 and dirty > 0
        cleaner = LogCleaner(BrokerConfig(data_dir=tmp_path), lambda: partitions, lambda: now_ms, _no_files)
        return cleaner.choose() is not None

    assert not chosen(max_lag_ms=10_000, now_ms=2000)  # below its ratio and not overdue: left alone
    assert chosen(max_lag_ms=500, now_ms=2000)  # its dirty records are 1,000 ms old: overdue, cleaned anyway


async def _no_files(paths: Sequence[Path]) -> None:
    raise AssertionError("choose() frees nothing")


def test_retention_applies_to_compact_delete_and_never_to_compact_alone(tmp_path: Path) -> None:
    log, before = _filled(tmp_path)  # records of timestamp 1000
    log.update_config(dataclasses.replace(CONFIG, retention_ms=100))
    assert log.apply_retention(now_ms=5000) == [] and _everything(log) == before  # compact: kept, however old
    log.update_config(dataclasses.replace(CONFIG, cleanup_policy="compact,delete", retention_ms=100))
    assert log.apply_retention(now_ms=5000)  # compact,delete: what retention.ms no longer keeps goes
    assert log.log_start_offset > 0 and len(log.segments) == 1


def test_tombstones_go_after_delete_retention_from_the_first_pass(tmp_path: Path) -> None:
    log, _ = _filled(tmp_path)
    _pass(log, now_ms=10)
    assert any(key == b"k1" and value is None for _, key, value in _everything(log))
    _append(log, [(b"later", b"x")] * 20)
    log.flush_now()
    log.update_high_watermark(log.log_end_offset)
    _pass(log, now_ms=500)  # within delete.retention.ms of the first pass
    assert any(key == b"k1" and value is None for _, key, value in _everything(log))
    _append(log, [(b"later", b"y")] * 20)
    log.flush_now()
    log.update_high_watermark(log.log_end_offset)
    _pass(log, now_ms=2000)
    assert not any(key == b"k1" for _, key, _ in _everything(log))


def test_an_idempotent_producers_last_batch_is_kept_even_when_emptied(tmp_path: Path) -> None:
    log = PartitionLog.open(tmp_path, CONFIG, 0)
    _append(log, [(b"a", b"1")], producer=(7, 0, 0))
    for i in range(30):
        _append(log, [(b"a", b"%d" % i)])
    log.flush_now()
    log.update_high_watermark(log.log_end_offset)
    _pass(log, now_ms=10, producers={7: 0})
    headers = list(log.headers_from(0))
    assert headers[0].producer_id == 7 and headers[0].record_count == 0 and headers[0].base_sequence == 0
    assert not any(
        d.offset == 0 for d in decode_batches(log.read(0, 10**6, log.high_watermark, min_one_batch=True).data)
    )


def test_a_crash_after_the_commit_point_finishes_the_swap_at_open(tmp_path: Path) -> None:
    log, before = _filled(tmp_path)
    end = log.cleanable_end(now_ms=10)
    job = log.clean_job(10, {}, **LIMITS)
    assert job is not None
    result = cleaner.clean(job)
    cleaner.write_swap_manifest(tmp_path, result.groups[:-1])  # then SIGKILL: nothing else happened
    for seg in log.segments:
        seg.close()
    reopened = PartitionLog.open(tmp_path, CONFIG, 0)
    reopened.update_high_watermark(reopened.log_end_offset)
    rows = _everything(reopened)
    assert _latest([r for r in rows if r[0] < end]) == _latest([r for r in before if r[0] < end])
    assert not (tmp_path / cleaner.SWAP_MANIFEST).exists()
    assert not (tmp_path / cleaner.CLEANING_DIR).exists()  # the group not committed is dropped
    assert not list(tmp_path.glob("*" + cleaner.DELETED_SUFFIX))
    assert all(seg.max_timestamp == 1000 for seg in reopened.segments if seg.size)  # indexes loaded, not empty
    assert reopened.offset_for_timestamp(1000) == (rows[0][0], 1000)


def test_a_crash_before_the_commit_point_keeps_the_old_segments(tmp_path: Path) -> None:
    log, before = _filled(tmp_path)
    job = log.clean_job(10, {}, **LIMITS)
    assert job is not None
    cleaner.clean(job)  # the cleaned files are written, then SIGKILL before any manifest
    assert list((tmp_path / cleaner.CLEANING_DIR).glob("*.log"))
    for seg in log.segments:
        seg.close()
    reopened = PartitionLog.open(tmp_path, CONFIG, 0)
    reopened.update_high_watermark(reopened.log_end_offset)
    assert _everything(reopened) == before
    assert not (tmp_path / cleaner.CLEANING_DIR).exists()


def test_a_crash_in_the_middle_of_finishing_is_finished_at_open(tmp_path: Path) -> None:
    log, before = _filled(tmp_path)
    end = log.cleanable_end(now_ms=10)
    job = log.clean_job(10, {}, **LIMITS)
    assert job is not None
    result = cleaner.clean(dataclasses.replace(job, group_bytes_max=10_000))  # one group of several segments
    group = next(g for g in result.groups if len(g.replaces) > 1)
    cleaner.write_swap_manifest(tmp_path, [group])
    name = f"{group.replaces[1].base_offset:020d}.log"
    (tmp_path / name).rename(tmp_path / (name + cleaner.DELETED_SUFFIX))  # one replaced segment aside, then SIGKILL
    base = f"{group.base_offset:020d}"
    (tmp_path / (base + ".log")).rename(tmp_path / (base + ".log" + cleaner.DELETED_SUFFIX))
    (tmp_path / cleaner.CLEANING_DIR / (base + ".log")).rename(tmp_path / (base + ".log"))  # moved in; its indexes not
    for seg in log.segments:
        seg.close()
    reopened = PartitionLog.open(tmp_path, CONFIG, 0)
    reopened.update_high_watermark(reopened.log_end_offset)
    rows = _everything(reopened)
    assert _latest([r for r in rows if r[0] < end]) == _latest([r for r in before if r[0] < end])
    assert [r for r in rows if r[0] >= end] == [r for r in before if r[0] >= end]


def test_a_corrupt_segment_stops_the_pass_and_nothing_is_swapped(tmp_path: Path) -> None:
    log, _ = _filled(tmp_path)
    job = log.clean_job(10, {}, **LIMITS)
    assert job is not None
    victim = tmp_path / f"{job.segments[1].base_offset:020d}.log"
    data = bytearray(victim.read_bytes())
    data[70] ^= 0xFF
    victim.write_bytes(bytes(data))
    with pytest.raises(cleaner.CleanerError, match="corrupt"):
        cleaner.clean(job)
    assert not (tmp_path / cleaner.SWAP_MANIFEST).exists()  # nothing committed: the log is as it was
    assert [s.base_offset for s in log.segments] == [s.base_offset for s in job.segments] + [
        log.segments[-1].base_offset
    ]


def test_a_full_key_map_cleans_part_of_the_dirty_section_and_the_next_pass_goes_on(tmp_path: Path) -> None:
    log, before = _filled(tmp_path)
    job = log.clean_job(10, {}, map_entries_max=4, io_bytes_per_s=0.0)
    assert job is not None
    result = cleaner.clean(job)
    assert job.first_dirty_offset < result.cleaned_to < job.end_offset
    log.swap_cleaned(result, 10)
    assert log.cleaner.first_dirty_offset == result.cleaned_to
    end = log.cleanable_end(10)
    while (r := _pass(log, 10)) is not None and r.cleaned_to < end:
        pass
    rows = _everything(log)
    assert _latest([r for r in rows if r[0] < end]) == _latest([r for r in before if r[0] < end])


def test_segments_are_grouped_up_to_one_segments_size() -> None:
    segs = [cleaner.SegmentFile(i * 10, 100) for i in range(7)]
    groups = cleaner.group_segments(segs, 250)
    assert [len(g) for g in groups] == [2, 2, 2, 1]
    assert cleaner.group_segments([cleaner.SegmentFile(0, 999)], 10) == [(cleaner.SegmentFile(0, 999),)]


def test_the_checkpoint_merges_old_passes_conservatively(tmp_path: Path) -> None:
    cp = cleaner.CleanerCheckpoint()
    for i in range(cleaner.PASSES_KEPT + 5):
        cp.recorded(10 * (i + 1), 1000 * i)
    assert len(cp.passes) == cleaner.PASSES_KEPT and cp.first_dirty_offset == 10 * (cleaner.PASSES_KEPT + 5)
    assert cleaner.first_cleaned_ms(cp.passes, 0) >= 0  # offset 0 now counts as cleaned later: kept longer
    cp.save(tmp_path)
    assert cleaner.CleanerCheckpoint.load(tmp_path) == cp
