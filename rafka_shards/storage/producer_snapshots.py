"""Producer-state snapshot files of a partition directory: ``<offset, 20 digits>.snapshot`` (Kafka's names).

Runs in the shard that owns the partition; synchronous file I/O. A snapshot at offset N holds the idempotent-producer
state of every batch before N (the bytes are ``rafka_shards.shard.producer_state``'s to encode and check). Written
atomically (temp file, fsync, rename, fsync the directory), so a crash leaves the old file or the new one, never a
torn one; a snapshot past the log end after a crash (it may have been written before the data it covers was
fsynced) is never used, and is deleted when the log is truncated below it.
"""

from __future__ import annotations

from pathlib import Path

from controller.files import fsync_dir, write_atomically

SNAPSHOT_SUFFIX = ".snapshot"


def snapshot_path(directory: Path, offset: int) -> Path:
    return directory / f"{offset:020d}{SNAPSHOT_SUFFIX}"


def snapshot_offsets(directory: Path) -> list[int]:
    """Offsets of the snapshots in ``directory``, ascending."""
    out = []
    for path in directory.glob("*" + SNAPSHOT_SUFFIX):
        stem = path.name[: -len(SNAPSHOT_SUFFIX)]
        if stem.isdigit():
            out.append(int(stem))
    return sorted(out)


def write_snapshot(directory: Path, offset: int, data: bytes) -> None:
    write_atomically(snapshot_path(directory, offset), data)


def read_snapshot(directory: Path, offset: int) -> bytes:
    return snapshot_path(directory, offset).read_bytes()


def delete_snapshots(directory: Path, offsets: list[int]) -> None:
    if not offsets:
        return
    for offset in offsets:
        snapshot_path(directory, offset).unlink(missing_ok=True)
    fsync_dir(directory)
