"""A partition's log: ordered segments, offsets, durability hooks, recovery, retention (Kafka's UnifiedLog, one node).

Runs in the shard that owns the partition, on its event loop thread; synchronous file I/O, no asyncio. Only
``FlushJob.run`` is called from a worker thread, and it touches nothing but duplicated file descriptors.

Crash story:
- ``append`` = one pwrite(2) of the batches into the active segment (the page cache). Nothing is durable yet.
- ``flush_begin`` captures every file written since the previous flush (segment logs, their indexes, and the
  directory when a segment was created) and the log end offset; ``FlushJob.run`` fsyncs them; ``flush_complete``
  moves ``durable_offset`` to that end offset. The shard acknowledges acks=all only once ``durable_offset`` is past
  the batch (group commit: one job covers every append made before ``flush_begin``).
- ``open`` recovers: every segment from the recovery point on (the first segment that may hold unflushed data; all
  of them when the point is unknown) is scanned batch by batch with its CRC; the first torn or corrupt batch and
  everything after it are cut off (and later segments removed), the truncation is fsynced, the indexes of scanned
  segments are rebuilt. Fsynced batches were written completely before any later byte, so they always survive.
- The recovery point is written (atomically: temp file, fsync, rename, fsync dir) when a flush completes that made
  every segment before the active one durable, and at close.
"""

from __future__ import annotations

import bisect
import logging
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from controller.files import fsync_dir, write_atomically
from rafka_shards.model import ErrorCode, KafkaError
from rafka_shards.records.batch import BatchHeader, assign_offsets
from rafka_shards.records.builder import offset_for_timestamp_in_batch
from rafka_shards.storage.cleaner import (
    CLEANING_DIR,
    CleanedGroup,
    CleanerCheckpoint,
    CleanJob,
    CleanResult,
    SegmentFile,
    complete_swaps,
    finish_swap,
    unlink_all,
    write_swap_manifest,
)
from rafka_shards.storage.config import LogConfig
from rafka_shards.storage.segment import LogSegment

log = logging.getLogger(__name__)

RECOVERY_POINT_FILE = "recovery-point"
EPOCH_FILE = "leader-epoch-checkpoint"


@dataclass(frozen=True, slots=True)
class AppendInfo:
    base_offset: int
    last_offset: int
    log_append_time_ms: int
    log_start_offset: int


@dataclass(frozen=True, slots=True)
class ReadResult:
    data: memoryview | bytes
    first_offset: int
    next_offset: int


class FlushJob:
    """fsync of the files written since the previous job. Built on the loop thread, run on a worker thread."""

    def __init__(self, fds: list[int], target_offset: int, rolled_to: int | None, size: int) -> None:
        # Duplicated descriptors: a segment closed or deleted while the job runs is harmless.
        self._fds = [os.dup(fd) for fd in fds]
        self.target_offset = target_offset
        self.rolled_to = rolled_to  # base offset of the active segment if older segments became durable here
        self.size = size  # bytes appended since the previous job (the flusher runs small jobs first)

    def run(self) -> None:
        try:
            for fd in self._fds:
                os.fsync(fd)
        finally:
            for fd in self._fds:
                os.close(fd)
            self._fds = []


class PartitionLog:
    def __init__(self, directory: Path, config: LogConfig) -> None:
        self.directory = directory
        self.config = config
        self.segments: list[LogSegment] = []
        self._bases: list[int] = []
        self.log_start_offset = 0
        self.log_end_offset = 0
        self.durable_offset = 0
        self.high_watermark = 0
        self._dirty: dict[int, LogSegment] = {}  # base offset -> segment written since the last flush_begin
        self._dir_dirty = False
        self._rolled_since_flush: int | None = None
        self._dirty_bytes = 0  # appended since the last flush_begin
        # The lowest offset the log was cut at since the last flush_begin (None: not cut). The job in flight fsynced
        # its files as they were: below the cut they still hold what it made durable; above, other batches.
        # One job per log is in flight at a time (the flusher's rule), so one value suffices.
        self._cut_since_flush: int | None = None
        self._epochs: list[tuple[int, int]] = []  # (leader epoch, start offset)
        self.recovery_point = 0  # segments that end at or below it are fsynced whole
        self.cleaner = CleanerCheckpoint()

    # ---- opening and recovery ----------------------------------------------------------------------------------

    @classmethod
    def open(cls, directory: Path, config: LogConfig, now_ms: int) -> PartitionLog:
        directory.mkdir(parents=True, exist_ok=True)
        log = cls(directory, config)
        log._recover(now_ms)
        return log

    def _recover(self, now_ms: int) -> None:
        complete_swaps(self.directory)  # a cleaner swap that committed before a crash is finished first
        self.cleaner = CleanerCheckpoint.load(self.directory)
        bases = sorted(int(p.stem) for p in self.directory.glob("*.log") if p.stem.isdigit())
        recovery_point = self._read_recovery_point()
        interval = self.config.index_interval_bytes
        cut = False
        for i, base in enumerate(bases):
            seg = LogSegment(self.directory, base, now_ms)
            if cut:
                seg.delete()  # follows a torn segment: its data cannot be trusted to be contiguous
                continue
            next_base = bases[i + 1] if i + 1 < len(bases) else None
            if recovery_point is not None and next_base is not None and next_base <= recovery_point:
                last = next_base
                if seg.load(last):
                    self._add_segment(seg)
                    continue
            truncated, headers = seg.recover(interval)
            # A segment must end where the next begins, or be followed by a torn tail. Below the recovery point
            # (fsynced segments) it may end short: log compaction removed its last batches.
            below_recovery_point = recovery_point is not None and next_base is not None and next_base <= recovery_point
            if next_base is not None and (
                truncated or seg.next_offset > next_base or (seg.next_offset < next_base and not below_recovery_point)
            ):
                cut = True
            if not headers and self.segments:
                seg.delete()
                continue
            self._add_segment(seg)
        if not self.segments:
            self._add_segment(LogSegment(self.directory, 0, now_ms))
            self._dir_dirty = True
        self.log_start_offset = self.segments[0].base_offset
        self.log_end_offset = self.segments[-1].next_offset
        self.durable_offset = self.log_end_offset
        self.high_watermark = self.log_end_offset
        # Recovery truncated in place and fsynced; make the directory (deleted segments) durable too.
        fsync_dir(self.directory)
        self._load_epochs()
        self._write_recovery_point(self.segments[-1].base_offset)

    def _add_segment(self, seg: LogSegment) -> None:
        self.segments.append(seg)
        self._bases.append(seg.base_offset)

    def _read_recovery_point(self) -> int | None:
        try:
            text = (self.directory / RECOVERY_POINT_FILE).read_text().strip()
        except FileNotFoundError:
            return None
        return int(text) if text.isdigit() else None

    def _write_recovery_point(self, offset: int) -> None:
        """Record that the segments below ``offset`` are fsynced whole. Not written (a full disk): the point stays
        where it was, and an open after a crash scans a little more of the log; nothing else depends on it."""
        try:
            write_atomically(self.directory / RECOVERY_POINT_FILE, f"{offset}\n".encode())
        except OSError as e:
            log.warning("%s: recovery point %d not written: %s", self.directory.name, offset, e)
            return
        self.recovery_point = offset

    def headers_from(self, offset: int) -> Iterator[BatchHeader]:
        """Headers of the batches from the one holding ``offset`` to the log end, each with its own offsets (read
        from the segment files: used to rebuild producer state after a snapshot, not on the hot path)."""
        for seg in self.segments[self._segment_index(offset) :]:
            if offset >= seg.next_offset:
                continue
            start = seg.position_of(offset) if offset > seg.base_offset else 0
            for h in seg.iter_headers(start):
                if h.last_offset >= offset:
                    yield h

    # ---- leader epochs (KIP-101) -------------------------------------------------------------------------------

    def _load_epochs(self) -> None:
        path = self.directory / EPOCH_FILE
        entries: list[tuple[int, int]] = []
        try:
            lines = path.read_text().split("\n")
        except FileNotFoundError:
            lines = []
        for line in lines[2:]:
            parts = line.split()
            if len(parts) == 2 and all(p.lstrip("-").isdigit() for p in parts):
                entries.append((int(parts[0]), int(parts[1])))
        kept = [(e, o) for e, o in entries if o < self.log_end_offset]
        self._epochs = kept
        if kept != entries:
            self._write_epochs()

    def _write_epochs(self) -> None:
        body = "0\n" + f"{len(self._epochs)}\n" + "".join(f"{e} {o}\n" for e, o in self._epochs)
        write_atomically(self.directory / EPOCH_FILE, body.encode())

    def end_offset_for_epoch(self, epoch: int) -> tuple[int, int]:
        epochs = self._epochs
        i = bisect.bisect_right(epochs, (epoch, 2**63)) - 1
        if i < 0:
            return -1, -1
        found = epochs[i][0]
        if i + 1 < len(epochs):
            return found, epochs[i + 1][1]
        return found, self.log_end_offset

    # ---- appending ---------------------------------------------------------------------------------------------

    def append(self, buf: bytearray, headers: list[BatchHeader], leader_epoch: int, now_ms: int) -> AppendInfo:
        config = self.config
        for h in headers:
            if h.size > config.max_message_bytes:
                raise KafkaError(
                    ErrorCode.MESSAGE_TOO_LARGE,
                    f"batch of {h.size} bytes; max.message.bytes is {config.max_message_bytes}",
                )
        base = self.log_end_offset
        append_time = now_ms if config.message_timestamp_type == "LogAppendTime" else None
        next_offset = assign_offsets(buf, headers, base, leader_epoch, append_time)
        epochs_before = len(self._epochs)
        try:
            active = self._active_segment(len(buf), now_ms)
            if not self._epochs or leader_epoch > self._epochs[-1][0]:
                self._epochs.append((leader_epoch, base))
                self._write_epochs()
            active.append(buf, headers, base, config.index_interval_bytes)
        except OSError as e:
            raise self._write_failed(e, epochs_before) from e
        self._dirty[active.base_offset] = active
        self._dirty_bytes += len(buf)
        self.log_end_offset = next_offset
        return AppendInfo(base, next_offset - 1, -1 if append_time is None else append_time, self.log_start_offset)

    def append_replica(self, buf: bytearray, headers: list[BatchHeader], now_ms: int) -> int:
        """Batches copied from the partition's leader, with the offsets and leader epochs it gave them (a follower's
        append): they must continue this log exactly. Returns the new log end offset."""
        expected = self.log_end_offset
        for h in headers:
            # Above the end is a gap log compaction left in the leader's log (its removed batches), whatever the
            # topic's cleanup.policy is now (a log compacted before a switch to delete keeps its gaps); below, never.
            if h.base_offset < expected:
                raise KafkaError(
                    ErrorCode.CORRUPT_MESSAGE,
                    f"{self.directory.name}: replicated batch at offset {h.base_offset}, the log ends at {expected}",
                )
            expected = h.next_offset
        epochs_before = len(self._epochs)
        try:
            active = self._active_segment(len(buf), now_ms)
            for h in headers:
                if not self._epochs or h.partition_leader_epoch > self._epochs[-1][0]:
                    self._epochs.append((h.partition_leader_epoch, h.base_offset))
            if len(self._epochs) != epochs_before:
                self._write_epochs()
            active.append_as_is(buf, headers, self.config.index_interval_bytes)
        except OSError as e:
            raise self._write_failed(e, epochs_before) from e
        self._dirty[active.base_offset] = active
        self._dirty_bytes += len(buf)
        self.log_end_offset = expected
        return expected

    def _write_failed(self, e: OSError, epochs_before: int) -> KafkaError:
        """A write that failed (a full disk: ENOSPC; EIO) appended nothing: the segment undid its part, the epochs
        added for it are forgotten (the file is rewritten whole from memory next time). The client gets
        KAFKA_STORAGE_ERROR, a retriable error, and the shard stays up: a full disk serves again once space is freed.
        A roll that had begun stays (an empty active segment is a valid log)."""
        del self._epochs[epochs_before:]
        reason = e.strerror or type(e).__name__
        return KafkaError(ErrorCode.KAFKA_STORAGE_ERROR, f"{self.directory.name}: the write failed: {reason}")

    def _active_segment(self, incoming: int, now_ms: int) -> LogSegment:
        """The segment the next ``incoming`` bytes go to, rolled by size, age or offset span first if due."""
        active = self.segments[-1]
        if active.size > 0 and (
            active.size + incoming > self.config.segment_bytes
            or now_ms - active.created_ms > self.config.segment_ms
            # relative offsets in the index are u32: roll long before a segment could span 2**32 offsets
            or self.log_end_offset - active.base_offset >= 2**31
        ):
            active = self._roll(now_ms)
        return active

    @property
    def last_epoch(self) -> int:
        """The leader epoch of the newest batch (-1 for an empty log): what a follower asks its new leader about."""
        return self._epochs[-1][0] if self._epochs else -1

    def _roll(self, now_ms: int) -> LogSegment:
        # Its last time entry, and all its files fsynced by the next flush job (its indexes were not while it was
        # active), before the recovery point passes it.
        old = self.segments[-1]
        old.seal()
        self._dirty[old.base_offset] = old
        seg = LogSegment(self.directory, self.log_end_offset, now_ms)
        self._add_segment(seg)
        self._dir_dirty = True
        self._rolled_since_flush = seg.base_offset
        return seg

    # ---- durability --------------------------------------------------------------------------------------------

    def flush_begin(self) -> FlushJob | None:
        if not self._dirty and not self._dir_dirty:
            return None
        fds: list[int] = []
        active = self.segments[-1] if self.segments else None
        for seg in self._dirty.values():
            # The active segment's index files need no fsync: every open rescans the active segment (the recovery
            # point is its base) and rebuilds them, and a segment is flushed whole, indexes included, in the round
            # after its roll, before the recovery point passes it. One fsync per partition per round instead of three.
            fds.extend((seg.fd,) if seg is active else seg.fds())
        if self._dir_dirty:
            dir_fd = os.open(self.directory, os.O_RDONLY)
            fds.append(dir_fd)
        job = FlushJob(fds, self.log_end_offset, self._rolled_since_flush, self._dirty_bytes)
        if self._dir_dirty:
            os.close(dir_fd)
        self._dirty = {}
        self._dir_dirty = False
        self._rolled_since_flush = None
        self._dirty_bytes = 0
        self._cut_since_flush = None
        return job

    def flush_complete(self, job: FlushJob) -> None:
        target = job.target_offset
        if self._cut_since_flush is not None:
            target = min(target, self._cut_since_flush)
        self.durable_offset = max(self.durable_offset, target)
        if job.rolled_to is not None:
            self._write_recovery_point(job.rolled_to)

    def flush_now(self) -> None:
        job = self.flush_begin()
        if job is not None:
            job.run()
            self.flush_complete(job)

    def update_high_watermark(self, offset: int) -> None:
        assert offset <= self.log_end_offset, (offset, self.log_end_offset)
        self.high_watermark = max(self.high_watermark, offset)

    def forget_high_watermark(self) -> None:
        """Recovery sets the high watermark to the end of the log, right for a partition with one replica. A replica
        of a replicated partition does not know which of its records every in-sync replica has: it starts from the
        log start, and fetches (its followers', or its leader's answers) raise it again."""
        self.high_watermark = self.log_start_offset

    def update_config(self, config: LogConfig) -> None:
        self.config = config

    # ---- reading -----------------------------------------------------------------------------------------------

    def _segment_index(self, offset: int) -> int:
        return max(0, bisect.bisect_right(self._bases, offset) - 1)

    def read(self, offset: int, max_bytes: int, upper_bound: int, *, min_one_batch: bool) -> ReadResult:
        if not self.log_start_offset <= offset <= self.log_end_offset:
            raise KafkaError(
                ErrorCode.OFFSET_OUT_OF_RANGE,
                f"offset {offset} is outside the log [{self.log_start_offset}, {self.log_end_offset}]",
            )
        upper_bound = min(upper_bound, self.log_end_offset)
        i = self._segment_index(offset)
        while i < len(self.segments) and offset < upper_bound:
            seg = self.segments[i]
            if offset >= seg.next_offset:
                i += 1
                continue
            start = seg.position_of(offset)
            if start >= seg.size:
                i += 1  # log compaction removed this segment's batches from ``offset`` on: the next one has more
                continue
            end = seg.position_of(upper_bound) if upper_bound < seg.next_offset else seg.size
            data = seg.read(start, end, max_bytes, min_one_batch)
            if not data:
                break
            first = seg.header_at(start)
            last_base = _last_batch_base(data)
            last = seg.header_at(start + last_base)
            return ReadResult(data, first.base_offset, last.next_offset)
        return ReadResult(b"", -1, offset)

    def offset_for_timestamp(self, target_ms: int) -> tuple[int, int] | None:
        for seg in self.segments:
            if seg.max_timestamp < target_ms:
                continue
            for h in seg.iter_headers(seg.time_lookup_position(target_ms)):
                if h.max_timestamp >= target_ms:
                    batch = os.pread(seg.fd, h.size, h.position)
                    found = offset_for_timestamp_in_batch(batch, target_ms)
                    if found is not None:
                        return found
        return None

    def max_timestamp_offset(self) -> tuple[int, int] | None:
        best: LogSegment | None = None
        for seg in self.segments:
            if seg.max_timestamp >= 0 and (best is None or seg.max_timestamp > best.max_timestamp):
                best = seg
        if best is None:
            return None
        h = best.header_at(best.max_timestamp_batch_position)
        batch = os.pread(best.fd, h.size, best.max_timestamp_batch_position)
        return offset_for_timestamp_in_batch(batch, h.max_timestamp)

    def size_bytes(self) -> int:
        return sum(seg.size for seg in self.segments)

    # ---- compaction (rafka_shards.storage.cleaner) -------------------------------------------------------------

    def cleanable_end(self, now_ms: int) -> int:
        """The first offset a cleaner pass may not touch: the base of the first segment that is active, not fsynced
        whole (past the recovery point), not wholly below the high watermark (a follower may still truncate it), or
        younger than min.compaction.lag.ms."""
        lag = self.config.min_compaction_lag_ms
        for i, seg in enumerate(self.segments[:-1]):
            end = self.segments[i + 1].base_offset
            young = lag > 0 and now_ms - seg.max_timestamp < lag
            if end > self.recovery_point or end > self.high_watermark or young:
                return seg.base_offset
        return self.segments[-1].base_offset

    @property
    def first_dirty_offset(self) -> int:
        """Where the part of the log no cleaner pass has compacted yet begins (never before the log start)."""
        return max(self.cleaner.first_dirty_offset, self.log_start_offset)

    def dirty_ratio(self, now_ms: int) -> tuple[float, int, int]:
        """(dirty bytes / cleanable bytes, dirty bytes, cleanable bytes) below ``cleanable_end``."""
        end = self.cleanable_end(now_ms)
        first_dirty = self.first_dirty_offset
        total = dirty = 0
        for i, seg in enumerate(self.segments[:-1]):
            if seg.base_offset >= end:
                break
            total += seg.size
            if self.segments[i + 1].base_offset > first_dirty:
                dirty += seg.size
        return (dirty / total if total else 0.0), dirty, total

    def clean_job(
        self, now_ms: int, producer_last_offsets: dict[int, int], *, map_entries_max: int, io_bytes_per_s: float
    ) -> CleanJob | None:
        """What the cleaner worker needs for a pass now, or None when nothing is dirty below the cleanable end."""
        end = self.cleanable_end(now_ms)
        first_dirty = self.first_dirty_offset
        if first_dirty >= end:
            return None
        segments = tuple(SegmentFile(s.base_offset, s.size) for s in self.segments if s.base_offset < end)
        return CleanJob(
            directory=str(self.directory),
            segments=segments,
            first_dirty_offset=first_dirty,
            end_offset=end,
            now_ms=now_ms,
            passes=tuple(self.cleaner.passes),
            delete_retention_ms=self.config.delete_retention_ms,
            producer_last_offsets=producer_last_offsets,
            group_bytes_max=self.config.segment_bytes,
            map_entries_max=map_entries_max,
            io_bytes_per_s=io_bytes_per_s,
            index_interval_bytes=self.config.index_interval_bytes,
        )

    def swap_cleaned(self, result: CleanResult, now_ms: int) -> tuple[int, list[Path]]:
        """Swap in the cleaned groups of a pass whose segments are still there unchanged (retention or a truncation
        may have moved on meanwhile: those groups are dropped), and record the pass. Cheap on the caller's loop: one
        manifest, renames, two directory fsyncs, the cleaned segments' own index files loaded. Returns the groups
        swapped and the replaced files renamed aside, which the caller unlinks (off its loop)."""
        where = {s.base_offset: i for i, s in enumerate(self.segments)}
        valid = [g for g in result.groups if self._unchanged(where, g)]
        staging = self.directory / CLEANING_DIR
        for g in result.groups:
            if g not in valid:
                unlink_all([staging / f"{g.base_offset:020d}{suffix}" for suffix in (".log", ".index", ".timeindex")])
        aside: list[Path] = []
        if valid:
            write_swap_manifest(self.directory, valid)  # the commit point
            for g in valid:
                for i in range(where[g.base_offset], where[g.base_offset] + len(g.replaces)):
                    self.segments[i].close()
                    self._dirty.pop(self.segments[i].base_offset, None)
            aside = finish_swap(self.directory, [(g.base_offset, [s.base_offset for s in g.replaces]) for g in valid])
            for g in sorted(valid, key=lambda g: g.base_offset, reverse=True):  # later groups first: indexes hold
                first = where[g.base_offset]
                after = first + len(g.replaces)
                fresh = LogSegment(self.directory, g.base_offset, now_ms)
                if not fresh.load(self.segments[after].base_offset):
                    fresh.recover(self.config.index_interval_bytes)  # its index files did not survive: rebuild
                self.segments[first:after] = [fresh]
            self._bases = [s.base_offset for s in self.segments]
        self.cleaner.recorded(result.cleaned_to, now_ms)
        self.cleaner.save(self.directory)
        return len(valid), aside

    def _unchanged(self, where: dict[int, int], group: CleanedGroup) -> bool:
        """The segments ``group`` replaces are still this log's, whole and closed."""
        first = where.get(group.base_offset)
        if first is None or first + len(group.replaces) >= len(self.segments):  # never the active segment
            return False
        return all(
            self.segments[first + k].base_offset == s.base_offset and self.segments[first + k].size == s.size
            for k, s in enumerate(group.replaces)
        )

    # ---- retention and truncation ------------------------------------------------------------------------------

    def apply_retention(self, now_ms: int) -> list[Path]:
        """Remove old segments by retention.ms and retention.bytes when cleanup.policy has delete: their files are
        renamed aside (``*.deleted``) and returned, for the caller to free off its loop (``GradualDeleter``)."""
        aside: list[Path] = []
        config = self.config
        if not config.delete:
            return aside
        total = self.size_bytes()
        while len(self.segments) > 1:
            seg = self.segments[0]
            if seg.next_offset > self.high_watermark:
                break
            expired = (
                config.retention_ms >= 0 and seg.max_timestamp >= 0 and now_ms - seg.max_timestamp > config.retention_ms
            )
            oversized = config.retention_bytes >= 0 and total - seg.size >= config.retention_bytes
            if not (expired or oversized):
                break
            total -= seg.size
            self.segments.pop(0)
            self._bases.pop(0)
            self._dirty.pop(seg.base_offset, None)
            aside += seg.rename_aside()
            self.log_start_offset = self.segments[0].base_offset
        if aside:
            fsync_dir(self.directory)
        return aside

    def truncate_to(self, offset: int) -> None:
        offset = max(offset, self.log_start_offset)
        while len(self.segments) > 1 and self.segments[-1].base_offset >= offset:
            seg = self.segments.pop()
            self._bases.pop()
            self._dirty.pop(seg.base_offset, None)
            seg.delete()
        self.segments[-1].truncate_to(offset)
        self.log_end_offset = self.segments[-1].next_offset
        self._note_cut(self.log_end_offset)
        self.durable_offset = min(self.durable_offset, self.log_end_offset)
        self.high_watermark = min(self.high_watermark, self.log_end_offset)
        self._epochs = [(e, o) for e, o in self._epochs if o < self.log_end_offset]
        self._write_epochs()
        fsync_dir(self.directory)

    def _note_cut(self, offset: int) -> None:
        if self._cut_since_flush is None or offset < self._cut_since_flush:
            self._cut_since_flush = offset

    def truncate_fully_and_start_at(self, offset: int, now_ms: int) -> None:
        """Drop every segment and start an empty log at ``offset`` (Kafka's ``truncateFullyAndStartAt``): a
        follower whose log ends below its leader's log start (retention deleted what it lacks) can only continue
        from there."""
        assert offset >= 0, offset
        for seg in self.segments:
            seg.delete()
        self.segments = []
        self._bases = []
        self._dirty = {}
        self._rolled_since_flush = None
        self._dirty_bytes = 0
        self._note_cut(offset)
        self._add_segment(LogSegment(self.directory, offset, now_ms))
        self.log_start_offset = self.log_end_offset = self.durable_offset = self.high_watermark = offset
        self._epochs = []
        self._write_epochs()
        self._write_recovery_point(offset)
        fsync_dir(self.directory)
        assert self.segments[0].next_offset == offset, (self.segments[0].next_offset, offset)

    # ---- closing -----------------------------------------------------------------------------------------------

    def close(self) -> None:
        self.flush_now()
        self._write_recovery_point(self.segments[-1].base_offset)
        for seg in self.segments:
            seg.close()
        self.segments = []

    def delete(self) -> None:
        for seg in self.segments:
            seg.close()
        self.segments = []
        shutil.rmtree(self.directory, ignore_errors=True)


def _last_batch_base(data: memoryview | bytes) -> int:
    """Position of the last batch inside ``data`` (a whole number of batches)."""
    p = 0
    last = 0
    n = len(data)
    while p + 12 <= n:
        last = p
        p += int.from_bytes(data[p + 8 : p + 12], "big") + 12
    return last
