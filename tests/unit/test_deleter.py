"""GradualDeleter: files freed a chunk at a time at the configured rate, on simulated time."""

from __future__ import annotations

import os
import threading
from pathlib import Path

from rafka_shards.storage.deleter import GradualDeleter

MIB = 1024 * 1024


class SimTime:
    """A clock that only moves when the deleter waits; records each file's size at every wait."""

    def __init__(self, watched: list[Path]) -> None:
        self.now = 0.0
        self.watched = watched
        self.sizes: list[tuple[float, list[int]]] = []
        self.stop_after_waits: int | None = None

    def clock(self) -> float:
        return self.now

    def wait(self, event: threading.Event, seconds: float) -> bool:
        self.sizes.append((self.now, [p.stat().st_size if p.exists() else -1 for p in self.watched]))
        self.now += seconds
        if self.stop_after_waits is not None and len(self.sizes) >= self.stop_after_waits:
            event.set()
        return event.is_set()


def _files(tmp_path: Path, sizes: list[int]) -> list[Path]:
    paths = []
    for i, size in enumerate(sizes):
        p = tmp_path / f"{i:020d}.log.deleted"
        with open(p, "wb") as f:
            f.truncate(size)  # sparse is enough: the sizes are what the deleter steps through
        paths.append(p)
    return paths


def test_files_shrink_a_chunk_at_a_time_at_the_rate_then_go(tmp_path: Path) -> None:
    paths = _files(tmp_path, [10 * MIB, 3 * MIB, 0])
    sim = SimTime(paths)
    deleter = GradualDeleter(4 * MIB, chunk_bytes=2 * MIB, clock=sim.clock, wait=sim.wait)
    deleter.delete([*paths, tmp_path / "missing.deleted"])
    assert not any(p.exists() for p in paths)
    first = [sizes[0] for _, sizes in sim.sizes if sizes[0] >= 0]
    assert first == [8 * MIB, 6 * MIB, 4 * MIB, 2 * MIB]  # never more than a chunk freed between two waits
    for t, sizes in sim.sizes:  # what is freed by any moment is within the rate (one chunk ahead at most)
        freed = sum(original - max(size, 0) for original, size in zip([10 * MIB, 3 * MIB, 0], sizes, strict=True))
        assert freed <= 4 * MIB * t + 2 * MIB + 1
    assert sim.now >= (8 * MIB + 2 * MIB) / (4 * MIB)  # the chunks truncated took their time


def test_stop_ends_a_deletion_at_once_and_leaves_the_rest(tmp_path: Path) -> None:
    paths = _files(tmp_path, [10 * MIB, 10 * MIB])
    sim = SimTime(paths)
    sim.stop_after_waits = 2
    deleter = GradualDeleter(4 * MIB, chunk_bytes=2 * MIB, clock=sim.clock, wait=sim.wait)
    deleter.delete(paths)
    assert paths[0].stat().st_size == 6 * MIB and paths[1].stat().st_size == 10 * MIB
    deleter.delete(paths)  # stopped for good: nothing more happens
    assert paths[1].stat().st_size == 10 * MIB


def test_no_rate_unlinks_each_file_at_once(tmp_path: Path) -> None:
    paths = _files(tmp_path, [10 * MIB])
    sim = SimTime(paths)
    GradualDeleter(0, clock=sim.clock, wait=sim.wait).delete(paths)
    assert not paths[0].exists() and sim.sizes == []


def test_with_real_time_it_frees_real_files(tmp_path: Path) -> None:
    paths = _files(tmp_path, [3 * MIB])
    with open(paths[0], "r+b") as f:
        f.write(os.urandom(MIB))
    GradualDeleter(1024 * MIB, chunk_bytes=MIB).delete(paths)
    assert not paths[0].exists()
