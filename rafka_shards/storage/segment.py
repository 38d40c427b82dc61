"""One log segment: ``<base_offset>.log`` plus a sparse offset index and a time index (Kafka's LogSegment).

Runs in the shard that owns the partition; synchronous file I/O, no asyncio. The indexes live in memory (arrays of
machine integers, searched by bisect: unlike lists of ints, the garbage collector never walks them) and are appended
to ``.index`` (relative offset u32, position u32) and ``.timeindex`` (timestamp i64, relative offset u32) files.

Both indexes are sparse, as Kafka's: an entry when ``index.interval.bytes`` were written since the last one. A time
entry holds the largest timestamp so far and the offset of the batch that carries it (only when it grew), so every
batch before an entry's batch has a smaller timestamp. A segment that stops being the active one gets a last time
entry (``seal``), so its largest timestamp (what retention.ms compares) survives a restart. The index files are a
cache: a segment that is scanned at recovery rebuilds them, and files that fail a sanity check are rebuilt from the
log.
"""

from __future__ import annotations

import array
import bisect
import collections
import dataclasses
import itertools
import mmap
import os
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

from rafka_shards.records.batch import BATCH_HEADER_SIZE, LOG_OVERHEAD, BatchHeader, parse_header, scan_for_recovery
from rafka_shards.storage.config import RECENT_BATCHES_MAX

DELETED_SUFFIX = ".deleted"  # files no longer part of the log: freed off the shard's loop, or when the log opens

_INDEX_ENTRY = struct.Struct(">II")
_TIME_ENTRY = struct.Struct(">qI")
_LENGTH = struct.Struct(">qi")


def segment_name(base_offset: int) -> str:
    return f"{base_offset:020d}"


class _Mark(NamedTuple):
    """A segment's appendable state before a write, to go back to if the write fails."""

    recent_batches: int
    index_entries: int
    time_entries: int
    max_timestamp: int
    max_timestamp_position: int
    max_timestamp_relative: int
    bytes_since_index: int


class LogSegment:
    def __init__(self, directory: Path, base_offset: int, created_ms: int) -> None:
        self.directory = directory
        self.base_offset = base_offset
        stem = directory / segment_name(base_offset)
        self.log_path = stem.with_suffix(".log")
        self.index_path = stem.with_suffix(".index")
        self.timeindex_path = stem.with_suffix(".timeindex")
        self.fd = os.open(self.log_path, os.O_RDWR | os.O_CREAT, 0o644)
        self.index_fd = os.open(self.index_path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
        self.timeindex_fd = os.open(self.timeindex_path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
        self.size = os.fstat(self.fd).st_size
        self.next_offset = base_offset
        self.created_ms = created_ms
        self.max_timestamp = -1
        self.max_timestamp_batch_position = -1
        self._index_offsets = _ints()
        self._index_positions = _ints()
        self._time_values = _ints()
        self._time_offsets = _ints()
        self._max_timestamp_relative = -1  # relative offset of the batch with max_timestamp
        self._bytes_since_index = 2**62  # the first batch appended is always indexed
        self._recent: collections.deque[tuple[int, int]] = collections.deque(maxlen=RECENT_BATCHES_MAX)

    # ---- loading -----------------------------------------------------------------------------------------------

    def recover(self, index_interval_bytes: int) -> tuple[bool, list[BatchHeader]]:
        """Scan every batch (CRC included), truncate a torn or corrupt tail, rebuild the indexes.

        Returns (whether anything was truncated, the valid headers).
        """
        headers: list[BatchHeader] = []
        valid_end = 0
        if self.size:
            with mmap.mmap(self.fd, self.size, prot=mmap.PROT_READ) as mm, memoryview(mm) as view:
                valid_end, headers = scan_for_recovery(view)
        if headers and headers[0].base_offset < self.base_offset:
            valid_end, headers = 0, []  # the segment's name disagrees with its content: trust neither
        # (A first batch above the name is a segment log compaction rewrote: its first records were removed.)
        truncated = valid_end != self.size
        if truncated:
            os.ftruncate(self.fd, valid_end)
            os.fsync(self.fd)
            self.size = valid_end
        self._recent.clear()
        self._rebuild_indexes(headers, index_interval_bytes)
        return truncated, headers

    def load(self, next_offset: int) -> bool:
        """Load the index files of a segment that needs no scan; False if they fail a sanity check."""
        self.next_offset = next_offset
        offsets, positions = _read_pairs(self.index_fd, _INDEX_ENTRY)
        tvalues, toffsets = _read_pairs(self.timeindex_fd, _TIME_ENTRY)
        sane = (
            (self.size == 0 or bool(offsets))  # the first batch is always indexed: no entry means no index file
            and all(a < b for a, b in itertools.pairwise(offsets))
            and all(a < b for a, b in itertools.pairwise(positions))
            and all(p < self.size for p in positions)
            and all(self.base_offset + o < next_offset for o in offsets)
            and all(a <= b for a, b in itertools.pairwise(tvalues))
            and all(self.base_offset + o < next_offset for o in toffsets)
        )
        if not sane:
            return False
        self._index_offsets, self._index_positions = offsets, positions
        self._time_values, self._time_offsets = tvalues, toffsets
        if tvalues:
            self.max_timestamp = tvalues[-1]
            self._max_timestamp_relative = toffsets[-1]
            self.max_timestamp_batch_position = self.position_of(self.base_offset + toffsets[-1])
        return True

    def _rebuild_indexes(self, headers: list[BatchHeader], index_interval_bytes: int) -> None:
        for fd in (self.index_fd, self.timeindex_fd):
            os.ftruncate(fd, 0)
        self._index_offsets, self._index_positions = _ints(), _ints()
        self._time_values, self._time_offsets = _ints(), _ints()
        self._bytes_since_index = index_interval_bytes  # index the first batch
        self.max_timestamp = -1
        self.max_timestamp_batch_position = -1
        self._max_timestamp_relative = -1
        self.next_offset = self.base_offset
        for h in headers:
            self._index_batch(h, h.position, index_interval_bytes)
        if headers:
            self.next_offset = headers[-1].next_offset
        self.seal()  # exact after a scan, whether the segment stays active or not

    # ---- appending ---------------------------------------------------------------------------------------------

    def append(self, buf: bytearray, headers: list[BatchHeader], first_offset: int, index_interval_bytes: int) -> None:
        """Write ``buf`` (batches whose offsets were assigned from ``first_offset``) with one write(2). A write that
        fails (ENOSPC, EIO) leaves the segment as it was, files and memory, and raises the OSError."""
        mark = self._mark()
        try:
            position = self._write_at_end(buf)
            offset = first_offset
            for h in headers:
                batch_position = position + h.position
                self._index_batch_at(offset, h, batch_position, index_interval_bytes)
                offset += h.last_offset_delta + 1
        except OSError:
            self._undo(mark)
            raise
        self.size = position + len(buf)
        self.next_offset = offset

    def append_as_is(self, buf: bytearray, headers: list[BatchHeader], index_interval_bytes: int) -> None:
        """Write ``buf``, batches that already carry their offsets (a follower's copy of its leader's batches, where
        log compaction may have left gaps between them), with one write(2). Fails as ``append`` does."""
        mark = self._mark()
        try:
            position = self._write_at_end(buf)
            for h in headers:
                self._index_batch(h, position + h.position, index_interval_bytes)
        except OSError:
            self._undo(mark)
            raise
        self.size = position + len(buf)
        if headers:
            self.next_offset = headers[-1].next_offset

    def _mark(self) -> _Mark:
        return _Mark(
            len(self._recent),
            len(self._index_offsets),
            len(self._time_values),
            self.max_timestamp,
            self.max_timestamp_batch_position,
            self._max_timestamp_relative,
            self._bytes_since_index,
        )

    def _undo(self, mark: _Mark) -> None:
        """Back to ``mark`` after a failed write: the bytes past ``size`` (a partial batch) and the index entries
        written since are cut from the files, and the in-memory indexes forget them. Cutting a file frees space; it
        does not need any."""
        os.ftruncate(self.fd, self.size)
        while len(self._recent) > mark.recent_batches:
            self._recent.pop()
        # An entry is in memory once its write(2) returned: the file holds those, and at most a part of one more.
        for fd, entry_size, added in (
            (self.index_fd, _INDEX_ENTRY.size, len(self._index_offsets) - mark.index_entries),
            (self.timeindex_fd, _TIME_ENTRY.size, len(self._time_values) - mark.time_entries),
        ):
            end = os.fstat(fd).st_size
            os.ftruncate(fd, end - end % entry_size - added * entry_size)
        del self._index_offsets[mark.index_entries :], self._index_positions[mark.index_entries :]
        del self._time_values[mark.time_entries :], self._time_offsets[mark.time_entries :]
        self.max_timestamp, self.max_timestamp_batch_position = mark.max_timestamp, mark.max_timestamp_position
        self._max_timestamp_relative, self._bytes_since_index = mark.max_timestamp_relative, mark.bytes_since_index

    def _write_at_end(self, buf: bytearray) -> int:
        """pwrite(2) ``buf`` after the segment's last byte (looping over short writes); the position it went to."""
        position = self.size
        with memoryview(buf) as view:
            written = 0
            while written < len(buf):
                written += os.pwrite(self.fd, view[written:], position + written)
        return position

    def _index_batch(self, h: BatchHeader, position: int, index_interval_bytes: int) -> None:
        self._index_batch_at(h.base_offset, h, position, index_interval_bytes)

    def _index_batch_at(self, base_offset: int, h: BatchHeader, position: int, index_interval_bytes: int) -> None:
        relative = base_offset - self.base_offset
        assert 0 <= relative < 2**32 and position < 2**32, (relative, position)
        self._recent.append((base_offset, position))
        if h.max_timestamp > self.max_timestamp:
            self.max_timestamp = h.max_timestamp
            self.max_timestamp_batch_position = position
            self._max_timestamp_relative = relative
        if self._bytes_since_index >= index_interval_bytes:
            os.write(self.index_fd, _INDEX_ENTRY.pack(relative, position))  # first: memory follows the file
            self._index_offsets.append(relative)
            self._index_positions.append(position)
            self._bytes_since_index = 0
            self.seal()
        self._bytes_since_index += h.size

    def seal(self) -> None:
        """Write a time index entry for the largest timestamp so far unless the last entry has it already: at each
        index interval, and when the segment stops being the active one (rolled, or written by the cleaner)."""
        if self.max_timestamp > (self._time_values[-1] if self._time_values else -1):
            os.write(self.timeindex_fd, _TIME_ENTRY.pack(self.max_timestamp, self._max_timestamp_relative))
            self._time_values.append(self.max_timestamp)
            self._time_offsets.append(self._max_timestamp_relative)

    # ---- reading -----------------------------------------------------------------------------------------------

    def header_at(self, position: int) -> BatchHeader:
        return parse_header(os.pread(self.fd, BATCH_HEADER_SIZE, position))

    def position_of(self, offset: int) -> int:
        """Byte position of the batch containing ``offset`` (``size`` if it is past the segment's last batch)."""
        if offset >= self.next_offset:
            return self.size
        recent = self._recent
        if recent and recent[0][0] <= offset:
            # offset < next_offset, so the batch holding it is the last recent one starting at or before it.
            return recent[bisect.bisect_right(recent, (offset, 2**63)) - 1][1]
        i = bisect.bisect_right(self._index_offsets, offset - self.base_offset) - 1
        position = self._index_positions[i] if i >= 0 else 0
        while position < self.size:
            h = self.header_at(position)
            if h.last_offset >= offset:
                return position
            position += h.size
        return self.size

    def read(self, position: int, end_position: int, max_bytes: int, min_one_batch: bool) -> memoryview:
        """Whole batches from ``position`` up to ``end_position``, at most ``max_bytes`` (KIP-74 aside)."""
        want = min(max_bytes, end_position - position)
        data = os.pread(self.fd, max(want, 0), position) if want > 0 else b""
        p = 0
        n = len(data)
        while n - p >= LOG_OVERHEAD:
            _, length = _LENGTH.unpack_from(data, p)
            if p + length + LOG_OVERHEAD > n:
                break
            p += length + LOG_OVERHEAD
        if p == 0 and min_one_batch and end_position - position >= LOG_OVERHEAD:
            _, length = _LENGTH.unpack(os.pread(self.fd, LOG_OVERHEAD, position))
            size = min(length + LOG_OVERHEAD, end_position - position)
            data = os.pread(self.fd, size, position)
            return memoryview(data)
        return memoryview(data)[:p]

    def iter_headers(self, position: int = 0) -> Iterator[BatchHeader]:
        while position + BATCH_HEADER_SIZE <= self.size:
            h = dataclasses.replace(self.header_at(position), position=position)
            yield h
            position += h.size

    def time_lookup_position(self, target_ms: int) -> int:
        """A position from which no earlier batch can hold a timestamp >= target_ms."""
        i = bisect.bisect_left(self._time_values, target_ms) - 1
        if i < 0:
            return 0
        return self.position_of(self.base_offset + self._time_offsets[i])

    def truncate_to(self, offset: int) -> None:
        """Cut at the start of the batch holding ``offset`` and trim the indexes past the cut (no rescan).

        Batches are kept or dropped whole: dropping a little more than asked is safe (a follower fetches it again),
        keeping a divergent record is not. The batches before the cut were validated when they were appended or
        recovered, so only the index entries that point past the cut go; the index files are cut to match (they are
        a cache: a crash before they reach the disk leaves entries that fail ``load``'s sanity check and are rebuilt).
        """
        position = self.position_of(offset)
        if position >= self.size:
            return
        cut_offset = self.header_at(position).base_offset
        os.ftruncate(self.fd, position)
        os.fsync(self.fd)
        self.size = position
        self.next_offset = cut_offset
        keep = bisect.bisect_left(self._index_positions, position)
        del self._index_offsets[keep:], self._index_positions[keep:]
        os.ftruncate(self.index_fd, keep * _INDEX_ENTRY.size)
        keep = bisect.bisect_left(self._time_offsets, cut_offset - self.base_offset)
        del self._time_values[keep:], self._time_offsets[keep:]
        os.ftruncate(self.timeindex_fd, keep * _TIME_ENTRY.size)
        while self._recent and self._recent[-1][1] >= position:
            self._recent.pop()
        self._bytes_since_index = 0
        # The largest timestamp left: the last time entry's, or a batch's after it (entries are sparse, so at most an
        # index interval of batches to read).
        self.max_timestamp, self.max_timestamp_batch_position, self._max_timestamp_relative = -1, -1, -1
        start = 0
        if self._time_values:
            self.max_timestamp = self._time_values[-1]
            self._max_timestamp_relative = self._time_offsets[-1]
            start = self.max_timestamp_batch_position = self.position_of(self.base_offset + self._time_offsets[-1])
        for h in self.iter_headers(start):
            if h.max_timestamp > self.max_timestamp:
                self.max_timestamp, self.max_timestamp_batch_position = h.max_timestamp, h.position
                self._max_timestamp_relative = h.base_offset - self.base_offset

    # ---- files -------------------------------------------------------------------------------------------------

    def fds(self) -> tuple[int, int, int]:
        return self.fd, self.index_fd, self.timeindex_fd

    def close(self) -> None:
        for fd in self.fds():
            os.close(fd)

    def delete(self) -> None:
        self.close()
        for path in (self.log_path, self.index_path, self.timeindex_path):
            path.unlink(missing_ok=True)

    def rename_aside(self) -> list[Path]:
        """Close the segment and rename its files ``*.deleted`` (quick, unlike freeing a large file): the paths, for
        the caller to free off its loop. The caller fsyncs the directory."""
        self.close()
        aside = []
        for path in (self.log_path, self.index_path, self.timeindex_path):
            if path.exists():
                os.replace(path, path.with_name(path.name + DELETED_SUFFIX))
                aside.append(path.with_name(path.name + DELETED_SUFFIX))
        return aside


def _ints() -> array.array[int]:
    return array.array("q")


def _read_pairs(fd: int, entry: struct.Struct) -> tuple[array.array[int], array.array[int]]:
    size = os.fstat(fd).st_size
    whole = size - size % entry.size
    if whole != size:
        os.ftruncate(fd, whole)  # a torn last entry
    data = os.pread(fd, whole, 0) if whole else b""
    firsts, seconds = _ints(), _ints()
    for a, b in entry.iter_unpack(data):
        firsts.append(a)
        seconds.append(b)
    return firsts, seconds
