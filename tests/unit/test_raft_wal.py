"""Raft's disk: what is saved comes back after a reopen, a torn tail is cut, compaction keeps what follows."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from controller.raft.node import Ready
from controller.raft.types import ConfState, Entry, EntryKind, HardState, Index, NodeId, Snapshot, Term
from controller.raft.wal import RaftStorage, StorageCorrupt, encode_snapshot

CONF = ConfState(frozenset({NodeId(1), NodeId(2), NodeId(3)}))
BOOT = Snapshot(Index(0), Term(0), CONF, b"empty")


def entry(index: int, term: int, data: bytes = b"") -> Entry:
    return Entry(Term(term), Index(index), EntryKind.NORMAL, data or b"e%d" % index)


def ready(entries: list[Entry], hs: HardState | None = None, snapshot: Snapshot | None = None) -> Ready:
    return Ready(hs, True, snapshot, tuple(entries), (), (), ())


def test_entries_and_hard_state_survive_a_reopen(tmp_path: Path) -> None:
    storage, entries = RaftStorage.open(tmp_path, BOOT)
    assert entries == [] and storage.snapshot == BOOT
    storage.save(ready([entry(1, 1), entry(2, 1), entry(3, 1)], HardState(Term(1), NodeId(2), Index(2))))
    storage.save(ready([entry(3, 2), entry(4, 2)], HardState(Term(2), NodeId(3), Index(3))))  # conflict at 3
    storage.close()
    storage, entries = RaftStorage.open(tmp_path, BOOT)
    assert entries == [entry(1, 1), entry(2, 1), entry(3, 2), entry(4, 2)]
    assert storage.hard_state == HardState(Term(2), NodeId(3), Index(3))


def test_a_torn_tail_is_cut_off(tmp_path: Path) -> None:
    storage, _ = RaftStorage.open(tmp_path, BOOT)
    storage.save(ready([entry(1, 1), entry(2, 1)], HardState(Term(1), NodeId(1), Index(0))))
    size = storage.size_bytes()
    storage.close()
    with open(tmp_path / "wal", "r+b") as f:
        f.truncate(size - 3)
    storage, entries = RaftStorage.open(tmp_path, BOOT)
    assert entries == [entry(1, 1), entry(2, 1)]  # the hard state record was the torn one
    assert storage.hard_state == HardState(Term(0), NodeId(0), Index(0))
    assert os.path.getsize(tmp_path / "wal") < size - 3


def test_compaction_keeps_the_entries_after_the_snapshot(tmp_path: Path) -> None:
    storage, _ = RaftStorage.open(tmp_path, BOOT)
    storage.save(ready([entry(i, 1) for i in range(1, 6)], HardState(Term(1), NodeId(1), Index(5))))
    snap = Snapshot(Index(3), Term(1), CONF, b"state at 3")
    storage.compact(snap, [entry(4, 1), entry(5, 1)])
    storage.save(ready([entry(6, 1)]))
    storage.close()
    storage, entries = RaftStorage.open(tmp_path, BOOT)
    assert storage.snapshot == snap and entries == [entry(4, 1), entry(5, 1), entry(6, 1)]
    assert storage.hard_state.commit == 5


def test_a_crash_between_snapshot_and_log_rewrite_drops_a_diverged_suffix(tmp_path: Path) -> None:
    storage, _ = RaftStorage.open(tmp_path, BOOT)
    storage.save(ready([entry(i, 1) for i in range(1, 6)], HardState(Term(1), NodeId(1), Index(1))))
    storage.close()
    # A leader's snapshot at 4 of term 2 was written, then the process died before the log was rewritten.
    (tmp_path / "snapshot").write_bytes(encode_snapshot(Snapshot(Index(4), Term(2), CONF, b"leader's")))
    storage, entries = RaftStorage.open(tmp_path, BOOT)
    assert storage.snapshot.index == 4 and entries == []


def test_a_corrupt_snapshot_stops_the_start(tmp_path: Path) -> None:
    storage, _ = RaftStorage.open(tmp_path, BOOT)
    storage.close()
    data = bytearray((tmp_path / "snapshot").read_bytes())
    data[10] ^= 0xFF
    (tmp_path / "snapshot").write_bytes(bytes(data))
    with pytest.raises(StorageCorrupt):
        RaftStorage.open(tmp_path, BOOT)
