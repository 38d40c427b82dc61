"""Raft's disk: the write-ahead log of entries and hard state, and the snapshot file.

Runs in the controller's process (blocking file I/O: the asyncio shell calls it from an executor). Layout of the
directory (``data_dir/controller/raft``):

- ``snapshot``: ``[b"RSNP"][u32 version][u64 index][u64 term][u32 len][conf][u32 len][data][u32 crc32c]``, replaced
  atomically (write a temporary file, fsync, rename, fsync the directory).
- ``wal``: records ``[u32 length][u32 crc32c(body)][body]``; a body is an entry ``[1][u64 term][u64 index][u8 kind]
  [data]`` or a hard state ``[2][u64 term][u32 vote][u64 commit]``. An entry at index i replaces every entry from i
  on (a follower's conflicting suffix); replay keeps the last hard state. A torn or corrupt tail (a crash mid-write)
  is cut off at open.

``save(ready)`` appends and fsyncs when the Ready says so, before the shell sends a single message: so a vote, a
term and every acknowledged entry are on disk first. ``compact`` writes the snapshot, then rewrites the log without
the entries it covers.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path

import crc32c

from controller.files import fsync_dir, write_atomically
from controller.raft.messages import ENTRY_BYTES_MAX, SNAPSHOT_BYTES_MAX
from controller.raft.node import Ready
from controller.raft.types import ConfState, Entry, EntryKind, HardState, Index, NodeId, Snapshot, Term

RECORD_BYTES_MAX = ENTRY_BYTES_MAX + 64
_FRAME = struct.Struct(">II")
_ENTRY = struct.Struct(">BQQB")
_HARD = struct.Struct(">BQIQ")
_SNAP_HEAD = struct.Struct(">4sIQQI")
_U32 = struct.Struct(">I")
_MAGIC = b"RSNP"


class StorageCorrupt(Exception):
    """A snapshot file that fails its checksum: the node must not start from it."""


def encode_snapshot(snap: Snapshot) -> bytes:
    conf = snap.conf.encode()
    body = _SNAP_HEAD.pack(_MAGIC, 1, snap.index, snap.term, len(conf)) + conf + _U32.pack(len(snap.data)) + snap.data
    return body + _U32.pack(crc32c.crc32c(body))


def decode_snapshot(data: bytes) -> Snapshot:
    if len(data) < _SNAP_HEAD.size + 8 or crc32c.crc32c(data[:-4]) != _U32.unpack_from(data, len(data) - 4)[0]:
        raise StorageCorrupt("snapshot checksum mismatch")
    magic, version, index, term, conf_len = _SNAP_HEAD.unpack_from(data)
    if magic != _MAGIC or version != 1:
        raise StorageCorrupt("not a snapshot file of a known version")
    pos = _SNAP_HEAD.size
    conf = ConfState.decode(data[pos : pos + conf_len])
    pos += conf_len
    (length,) = _U32.unpack_from(data, pos)
    pos += 4
    if length > SNAPSHOT_BYTES_MAX or pos + length != len(data) - 4:
        raise StorageCorrupt("snapshot length mismatch")
    return Snapshot(Index(index), Term(term), conf, data[pos : pos + length])


def _entry_record(e: Entry) -> bytes:
    body = _ENTRY.pack(1, e.term, e.index, e.kind) + e.data
    return _FRAME.pack(len(body), crc32c.crc32c(body)) + body


def _hard_state_record(hs: HardState) -> bytes:
    body = _HARD.pack(2, hs.term, hs.vote, hs.commit)
    return _FRAME.pack(len(body), crc32c.crc32c(body)) + body


class RaftStorage:
    def __init__(self, directory: Path, fd: int, end: int, hard_state: HardState, snapshot: Snapshot) -> None:
        self.directory = directory
        self._fd = fd
        self._end = end
        self.hard_state = hard_state
        self.snapshot = snapshot

    @classmethod
    def open(cls, directory: Path, bootstrap: Snapshot) -> tuple[RaftStorage, list[Entry]]:
        """Open (or create, starting from ``bootstrap``) the Raft directory; returns it and the log entries."""
        directory.mkdir(parents=True, exist_ok=True)
        snap_path = directory / "snapshot"
        if snap_path.exists():
            snapshot = decode_snapshot(snap_path.read_bytes())
        else:
            snapshot = bootstrap
            write_atomically(snap_path, encode_snapshot(snapshot))
        wal_path = directory / "wal"
        created = not wal_path.exists()
        fd = os.open(wal_path, os.O_RDWR | os.O_CREAT, 0o644)
        if created:
            fsync_dir(directory)
        data = os.pread(fd, os.fstat(fd).st_size, 0)
        hard_state = HardState(Term(0), NodeId(0), Index(0))
        entries: list[Entry] = []
        term_at_snapshot: int | None = None  # the term of the logged entry at the snapshot's index, if any
        pos = 0
        while len(data) - pos >= _FRAME.size:
            length, crc = _FRAME.unpack_from(data, pos)
            body = data[pos + _FRAME.size : pos + _FRAME.size + length]
            if length > RECORD_BYTES_MAX or len(body) < length or length < 1 or crc32c.crc32c(body) != crc:
                break
            if body[0] == 1 and length >= _ENTRY.size:
                _, term, index, kind = _ENTRY.unpack_from(body)
                if kind not in EntryKind.__members__.values():
                    break
                first = snapshot.index + 1
                if index <= snapshot.index:
                    del entries[:]  # written before the snapshot was installed: replaces any later entry
                    term_at_snapshot = term if index == snapshot.index else None
                else:
                    if index > first + len(entries):
                        break  # a gap: not something this code wrote
                    del entries[index - first :]
                    entries.append(Entry(Term(term), Index(index), EntryKind(kind), body[_ENTRY.size :]))
            elif body[0] == 2 and length == _HARD.size:
                _, term, vote, commit = _HARD.unpack(body)
                hard_state = HardState(Term(term), NodeId(vote), Index(commit))
            else:
                break
            pos += _FRAME.size + length
        if pos != len(data):
            os.ftruncate(fd, pos)
            os.fsync(fd)
        if entries and term_at_snapshot is not None and term_at_snapshot != snapshot.term:
            # A crash between installing a leader's snapshot and rewriting the log left entries of a history that
            # diverged from the snapshot's: they were never committed, and they do not follow it. Drop them.
            entries = []
        return cls(directory, fd, pos, hard_state, snapshot), entries

    def save(self, rd: Ready) -> None:
        """Persist what a Ready asks, fsynced when it must be, before any of its messages is sent."""
        if rd.snapshot is not None:
            self._install(rd.snapshot, [], rd.hard_state or self.hard_state)
        parts = [_entry_record(e) for e in rd.entries]
        if rd.hard_state is not None:
            parts.append(_hard_state_record(rd.hard_state))
            self.hard_state = rd.hard_state
        if parts:
            data = b"".join(parts)
            os.pwrite(self._fd, data, self._end)
            self._end += len(data)
        if rd.must_sync:
            os.fsync(self._fd)

    def compact(self, snapshot: Snapshot, entries_after: list[Entry]) -> None:
        """The snapshot is durable before the entries it covers leave the log."""
        assert snapshot.index >= self.snapshot.index
        self._install(snapshot, entries_after, self.hard_state)

    def _install(self, snapshot: Snapshot, entries: list[Entry], hard_state: HardState) -> None:
        write_atomically(self.directory / "snapshot", encode_snapshot(snapshot))
        self.snapshot = snapshot
        data = b"".join([_hard_state_record(hard_state)] + [_entry_record(e) for e in entries])
        write_atomically(self.directory / "wal", data)
        os.close(self._fd)
        self._fd = os.open(self.directory / "wal", os.O_RDWR)
        self._end = len(data)
        self.hard_state = hard_state

    def size_bytes(self) -> int:
        return self._end

    def close(self) -> None:
        os.close(self._fd)
