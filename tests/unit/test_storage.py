"""The partition log on real files: round trips, rolls, recovery from torn writes and SIGKILL, retention, lookups."""

from __future__ import annotations

import gc
import itertools
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from controller.files import write_atomically
from rafka_shards.model import ErrorCode, KafkaError
from rafka_shards.records.batch import validate_batches
from rafka_shards.records.builder import Record, build_batch, decode_batches
from rafka_shards.storage.config import LogConfig
from rafka_shards.storage.log import PartitionLog


def _append(log: PartitionLog, values: list[bytes], ts: int = 1000, epoch: int = 0, now_ms: int = 0) -> tuple[int, int]:
    buf = bytearray(build_batch([Record(None, v, ts) for v in values]))
    info = log.append(buf, validate_batches(buf, max_batch_bytes=10**7), epoch, now_ms)
    return info.base_offset, info.last_offset


def _all_values(log: PartitionLog) -> list[tuple[int, bytes | None]]:
    out = []
    offset = log.log_start_offset
    while offset < log.high_watermark:
        r = log.read(offset, 10**6, log.high_watermark, min_one_batch=True)
        recs = decode_batches(r.data)
        out += [(d.offset, d.value) for d in recs if d.offset >= offset]
        offset = r.next_offset
    return out


def test_append_read_roll_reopen(tmp_path: Path) -> None:
    config = LogConfig(segment_bytes=500)
    log = PartitionLog.open(tmp_path, config, 0)
    expected = []
    for i in range(50):
        base, last = _append(log, [b"v%d-%d" % (i, j) for j in range(3)])
        assert (base, last) == (3 * i, 3 * i + 2)
        expected += [(3 * i + j, b"v%d-%d" % (i, j)) for j in range(3)]
    assert len(log.segments) > 5
    log.flush_now()
    log.update_high_watermark(log.log_end_offset)
    assert _all_values(log) == expected
    # a read starting inside a batch starts at the batch containing it
    r = log.read(4, 10**6, log.high_watermark, min_one_batch=True)
    assert r.first_offset == 3
    log.close()
    log = PartitionLog.open(tmp_path, config, 0)
    assert log.log_end_offset == 150 and log.high_watermark == 150
    assert _all_values(log) == expected


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.integers(1, 6), min_size=1, max_size=30), st.integers(1, 2000), st.data())
def test_reads_return_whole_batches_below_the_bound(
    tmp_path_factory: pytest.TempPathFactory, sizes: list[int], max_bytes: int, data: st.DataObject
) -> None:
    log = PartitionLog.open(tmp_path_factory.mktemp("log"), LogConfig(segment_bytes=700), 0)
    for n in sizes:
        _append(log, [b"x" * 20] * n)
    bound = data.draw(st.integers(0, log.log_end_offset))
    offset = data.draw(st.integers(0, log.log_end_offset))
    r = log.read(offset, max_bytes, bound, min_one_batch=data.draw(st.booleans()))
    headers = validate_batches(r.data, max_batch_bytes=10**6) if len(r.data) else []
    assert len(r.data) <= max_bytes or len(headers) == 1
    for h in headers:
        assert h.base_offset < bound
    if headers:
        assert headers[0].base_offset <= offset <= headers[0].last_offset
        assert all(a.next_offset == b.base_offset for a, b in itertools.pairwise(headers))
    log.close()


def test_offsets_out_of_range(tmp_path: Path) -> None:
    log = PartitionLog.open(tmp_path, LogConfig(), 0)
    _append(log, [b"a", b"b"])
    with pytest.raises(KafkaError) as e:
        log.read(3, 100, 2, min_one_batch=True)
    assert e.value.code is ErrorCode.OFFSET_OUT_OF_RANGE
    with pytest.raises(KafkaError):
        log.read(-1, 100, 2, min_one_batch=True)
    assert len(log.read(2, 100, 2, min_one_batch=True).data) == 0


def test_torn_tail_is_cut_at_every_byte(tmp_path: Path) -> None:
    base_dir = tmp_path / "orig"
    log = PartitionLog.open(base_dir, LogConfig(), 0)
    for i in range(3):
        _append(log, [b"flushed-%d" % i])
    log.flush_now()
    durable = log.durable_offset
    _append(log, [b"unflushed-a", b"unflushed-b"])
    seg_file = log.segments[-1].log_path
    full = seg_file.read_bytes()
    flushed_size = len(build_batch([Record(None, b"flushed-0", 1000)])) * 3
    for cut in range(flushed_size, len(full) + 1, 7):
        d = tmp_path / f"cut{cut}"
        d.mkdir()
        (d / seg_file.name).write_bytes(full[:cut] + (b"\xff" * 9 if cut < len(full) else b""))
        reopened = PartitionLog.open(d, LogConfig(), 0)
        assert reopened.log_end_offset in (durable, durable + 2)
        vals = _all_values(reopened)
        assert vals[:3] == [(0, b"flushed-0"), (1, b"flushed-1"), (2, b"flushed-2")]
        # appends continue at the right offset
        assert _append(reopened, [b"next"])[0] == reopened.log_end_offset - 1
        reopened.close()
    log.close()


def test_corrupt_indexes_are_rebuilt(tmp_path: Path) -> None:
    config = LogConfig(segment_bytes=400, index_interval_bytes=50)
    log = PartitionLog.open(tmp_path, config, 0)
    for i in range(40):
        _append(log, [b"v%d" % i])
    log.close()
    for p in tmp_path.glob("*.index"):
        p.write_bytes(os.urandom(13))
    for p in list(tmp_path.glob("*.timeindex"))[:2]:
        p.unlink()
    log = PartitionLog.open(tmp_path, config, 0)
    assert [v for _, v in _all_values(log)] == [b"v%d" % i for i in range(40)]
    assert log.read(17, 10**6, 40, min_one_batch=True).first_offset == 17


def test_sigkill_keeps_every_flushed_batch(tmp_path: Path) -> None:
    script = textwrap.dedent(
        f"""
        import sys
        from pathlib import Path
        from rafka_shards.records.batch import validate_batches
        from rafka_shards.records.builder import Record, build_batch
        from rafka_shards.storage.config import LogConfig
        from rafka_shards.storage.log import PartitionLog
        log = PartitionLog.open(Path({str(tmp_path)!r}), LogConfig(segment_bytes=20000), 0)
        i = 0
        while True:
            buf = bytearray(build_batch([Record(None, b"m%d" % i, 1)]))
            log.append(buf, validate_batches(buf, max_batch_bytes=10**6), 0, 0)
            i += 1
            if i % 10 == 0:
                log.flush_now()
                print(log.durable_offset, flush=True)
        """
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": os.getcwd()}
    )
    assert proc.stdout is not None
    flushed = 0
    deadline = time.monotonic() + 30
    while flushed < 500 and time.monotonic() < deadline:
        line = proc.stdout.readline()
        if line:
            flushed = int(line)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert flushed >= 500
    log = PartitionLog.open(tmp_path, LogConfig(segment_bytes=20000), 0)
    values = _all_values(log)
    assert len(values) >= flushed
    assert [v for _, v in values] == [b"m%d" % i for i in range(len(values))]


def test_retention_by_time_and_size(tmp_path: Path) -> None:
    log = PartitionLog.open(tmp_path, LogConfig(segment_bytes=300, retention_ms=1000), 0)
    for i in range(30):
        _append(log, [b"x" * 50], ts=i * 100)
    log.flush_now()
    log.update_high_watermark(log.log_end_offset)
    segments = len(log.segments)
    removed = [seg.base_offset for seg in log.segments if seg.max_timestamp < 500]
    aside = log.apply_retention(now_ms=1500)
    assert sorted(p.name for p in aside) == sorted(  # renamed for the shard to free off its loop, paced
        f"{base:020d}{suffix}.deleted" for base in removed for suffix in (".log", ".index", ".timeindex")
    )
    assert all(p.exists() for p in aside)
    assert log.log_start_offset > 0 and len(log.segments) < segments
    assert all(seg.max_timestamp >= 500 for seg in log.segments[:-1])
    with pytest.raises(KafkaError):
        log.read(0, 100, log.high_watermark, min_one_batch=True)
    log.update_config(LogConfig(segment_bytes=300, retention_ms=-1, retention_bytes=400))
    log.apply_retention(now_ms=10**9)
    assert log.size_bytes() - log.segments[0].size < 400
    start = log.log_start_offset
    log.close()
    reopened = PartitionLog.open(tmp_path, LogConfig(segment_bytes=300), 0)  # a crash before they were freed
    assert not list(tmp_path.glob("*.deleted")) and reopened.log_start_offset == start


def test_offset_for_timestamp_and_epochs(tmp_path: Path) -> None:
    log = PartitionLog.open(tmp_path, LogConfig(segment_bytes=300), 0)
    for i in range(20):
        buf = bytearray(build_batch([Record(None, b"a", 1000 + 10 * i), Record(None, b"b", 1005 + 10 * i)]))
        log.append(buf, validate_batches(buf, max_batch_bytes=10**6), i // 10, 0)
    assert log.offset_for_timestamp(0) == (0, 1000)
    assert log.offset_for_timestamp(1003) == (1, 1005)
    assert log.offset_for_timestamp(1100) == (20, 1100)
    assert log.offset_for_timestamp(5000) is None
    assert log.max_timestamp_offset() == (39, 1195)
    assert log.end_offset_for_epoch(0) == (0, 20)
    assert log.end_offset_for_epoch(1) == (1, 40)
    assert log.end_offset_for_epoch(7) == (1, 40)
    log.truncate_to(25)
    assert log.log_end_offset == 24  # the whole batch 24-25 holding offset 25 is dropped
    log.close()
    reopened = PartitionLog.open(tmp_path, LogConfig(segment_bytes=300), 0)
    assert reopened.end_offset_for_epoch(1) == (1, reopened.log_end_offset)


def _lookups(log: PartitionLog, last_ts: int) -> tuple[object, ...]:
    """What the last segment's indexes answer: its end, size, newest timestamp, and every offset and time lookup."""
    seg = log.segments[-1]
    return (
        seg.next_offset,
        seg.size,
        seg.max_timestamp,
        seg.max_timestamp_batch_position,
        log.max_timestamp_offset(),
        [log.offset_for_timestamp(t) for t in range(995, last_ts + 2)],
        [seg.position_of(o) for o in range(seg.next_offset + 1)],
    )


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    st.lists(st.tuples(st.integers(1, 5), st.integers(0, 3)), min_size=1, max_size=40),
    st.integers(1, 400),
    st.data(),
)
def test_truncation_trims_the_indexes_to_what_a_full_rescan_rebuilds(
    tmp_path_factory: pytest.TempPathFactory,
    batches: list[tuple[int, int]],
    index_interval: int,
    data: st.DataObject,
) -> None:
    """A truncated segment answers lookups, reads, timestamps and appends as one rebuilt from its files does."""
    directory = tmp_path_factory.mktemp("trim")
    config = LogConfig(index_interval_bytes=index_interval)
    log = PartitionLog.open(directory, config, 0)
    ts = 1000
    for n, step in batches:
        ts += step - 1  # timestamps that sometimes go down, so the time index skips some batches
        _append(log, [b"x" * 7] * n, ts=ts)
    cut = data.draw(st.integers(0, log.log_end_offset))
    log.truncate_to(cut)
    log.flush_now()
    log.update_high_watermark(log.log_end_offset)
    rebuilt_values = _all_values(log)
    state = _lookups(log, ts)
    log.close()
    for name in os.listdir(directory):
        if name.endswith(".index") or name.endswith(".timeindex"):
            os.unlink(directory / name)  # force a rescan: the indexes come from the log alone
    reopened = PartitionLog.open(directory, config, 0)
    reopened.update_high_watermark(reopened.log_end_offset)
    assert state == _lookups(reopened, ts)
    assert _all_values(reopened) == rebuilt_values
    base, _ = _append(reopened, [b"after"])
    reopened.update_high_watermark(reopened.log_end_offset)
    assert base == state[0] and _all_values(reopened) == [*rebuilt_values, (base, b"after")]
    reopened.close()


def test_roll_by_age_with_injected_clock(tmp_path: Path) -> None:
    log = PartitionLog.open(tmp_path, LogConfig(segment_ms=1000), now_ms=0)
    _append(log, [b"a"], now_ms=0)
    _append(log, [b"b"], now_ms=999)
    assert len(log.segments) == 1
    _append(log, [b"c"], now_ms=1001)
    assert len(log.segments) == 2 and log.segments[-1].base_offset == 2


def test_write_atomically_replaces_whole_file(tmp_path: Path) -> None:
    target = tmp_path / "f"
    write_atomically(target, b"one")
    write_atomically(target, b"two two")
    assert target.read_bytes() == b"two two"
    assert not (tmp_path / "f.tmp").exists()


def test_truncate_fully_and_start_at_continues_a_replica_from_the_leaders_log_start(tmp_path: Path) -> None:
    """Kafka's truncateFullyAndStartAt: a follower whose log ends below the leader's log start drops everything, starts
    empty there, copies the leader's batches with their offsets, and reopens the same after a restart."""
    leader = PartitionLog.open(tmp_path / "leader", LogConfig(segment_bytes=300, retention_bytes=600), 0)
    follower = PartitionLog.open(tmp_path / "follower", LogConfig(segment_bytes=300), 0)
    _append(follower, [b"old"] * 3, epoch=0)
    for i in range(40):
        _append(leader, [b"v%d" % i + b"x" * 40], epoch=1)
    leader.update_high_watermark(leader.log_end_offset)
    assert leader.apply_retention(now_ms=0)
    start = leader.log_start_offset
    assert start > follower.log_end_offset
    follower.truncate_fully_and_start_at(start, now_ms=0)
    assert (follower.log_start_offset, follower.log_end_offset, follower.high_watermark) == (start, start, start)
    assert follower.last_epoch == -1 and len(follower.segments) == 1
    while follower.log_end_offset < leader.log_end_offset:
        data = leader.read(follower.log_end_offset, 10**6, leader.log_end_offset, min_one_batch=True).data
        buf = bytearray(data)
        follower.append_replica(buf, validate_batches(buf, max_batch_bytes=10**7), 0)
    follower.update_high_watermark(follower.log_end_offset)
    assert _all_values(follower) == _all_values(leader)
    assert follower.end_offset_for_epoch(1) == (1, leader.log_end_offset)
    follower.close()
    reopened = PartitionLog.open(tmp_path / "follower", LogConfig(segment_bytes=300), 0)
    assert (reopened.log_start_offset, reopened.log_end_offset) == (start, leader.log_end_offset)
    assert _all_values(reopened) == _all_values(leader)


def test_a_flush_fsyncs_the_active_segments_log_alone_and_a_rolled_segment_whole(tmp_path: Path) -> None:
    """The active segment's indexes are rebuilt by every open, so a group commit fsyncs only its log; a segment that
    rolled is fsynced whole (log and both indexes) before the recovery point moves past it."""
    log = PartitionLog.open(tmp_path, LogConfig(segment_bytes=400), 0)
    log.flush_now()  # the new segment's directory entry
    _append(log, [b"x" * 50])
    job = log.flush_begin()
    assert job is not None and len(job._fds) == 1
    job.run()
    log.flush_complete(job)
    for i in range(20):
        _append(log, [b"y%d" % i * 10])
    assert len(log.segments) > 1
    job = log.flush_begin()
    assert job is not None and len(job._fds) == 3 * (len(log.segments) - 1) + 1 + 1  # + the directory (new files)
    job.run()
    log.flush_complete(job)


def test_the_active_segments_indexes_lost_to_a_crash_are_rebuilt(tmp_path: Path) -> None:
    """What a power loss can leave when only the active log was fsynced: its index files empty or stale."""
    config = LogConfig(segment_bytes=600, index_interval_bytes=50)
    log = PartitionLog.open(tmp_path, config, 0)
    for i in range(30):
        _append(log, [b"v%d" % i])
        log.flush_now()
    active = log.segments[-1].base_offset
    log.close()
    (tmp_path / f"{active:020d}.index").write_bytes(b"")
    (tmp_path / f"{active:020d}.timeindex").write_bytes(os.urandom(7))
    log = PartitionLog.open(tmp_path, config, 0)
    assert [v for _, v in _all_values(log)] == [b"v%d" % i for i in range(30)]
    assert log.read(29, 10**6, 30, min_one_batch=True).first_offset == 29


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    st.lists(st.lists(st.integers(-3, 6), min_size=1, max_size=4), min_size=1, max_size=60),
    st.integers(1, 600),
    st.integers(150, 1200),
)
def test_sparse_time_index_answers_as_a_full_scan_across_rolls_and_reopens(
    tmp_path_factory: pytest.TempPathFactory, batches: list[list[int]], index_interval: int, segment_bytes: int
) -> None:
    """The time index has an entry per index interval, not per batch; lookups by timestamp and each segment's largest
    timestamp (what retention.ms compares) are still exact, before and after a clean reopen that loads the rolled
    segments' index files without scanning them."""
    directory = tmp_path_factory.mktemp("timeindex")
    config = LogConfig(index_interval_bytes=index_interval, segment_bytes=segment_bytes)
    log = PartitionLog.open(directory, config, 0)
    records: list[tuple[int, int]] = []  # (offset, timestamp) in log order
    ts = 1000
    for steps in batches:
        stamps = []
        for step in steps:
            ts += step  # timestamps that also go down, inside and across batches
            stamps.append(ts)
        buf = bytearray(build_batch([Record(None, b"v", t) for t in stamps]))
        info = log.append(buf, validate_batches(buf, max_batch_bytes=10**6), 0, 0)
        records += [(info.base_offset + i, t) for i, t in enumerate(stamps)]
    log.flush_now()
    log.update_high_watermark(log.log_end_offset)
    lo, hi = min(t for _, t in records), max(t for _, t in records)

    def expected(target: int) -> tuple[int, int] | None:
        return next(((o, t) for o, t in records if t >= target), None)

    def segment_maxima(log: PartitionLog) -> list[int]:
        return [s.max_timestamp for s in log.segments]

    true_maxima = [max((t for o, t in records if s.base_offset <= o < s.next_offset), default=-1) for s in log.segments]
    assert segment_maxima(log) == true_maxima
    assert [log.offset_for_timestamp(t) for t in range(lo - 1, hi + 2)] == [expected(t) for t in range(lo - 1, hi + 2)]
    entries = sum(os.path.getsize(p) for p in directory.glob("*.timeindex")) // 12
    total_bytes = sum(s.size for s in log.segments)
    assert entries <= total_bytes // index_interval + 2 * len(log.segments)  # sparse: not one per batch
    # The garbage collector walks none of the indexes' numbers (a list of ints has one referent per entry).
    assert all(len(gc.get_referents(s._index_offsets, s._time_values)) <= 2 for s in log.segments)
    log.close()
    reopened = PartitionLog.open(directory, config, 0)
    reopened.update_high_watermark(reopened.log_end_offset)
    assert segment_maxima(reopened) == true_maxima
    assert [reopened.offset_for_timestamp(t) for t in range(lo - 1, hi + 2)] == [
        expected(t) for t in range(lo - 1, hi + 2)
    ]
    reopened.close()
