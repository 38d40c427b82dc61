"""The group-commit flusher: partitions flush as independent pipelines, small jobs first, real files on disk."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import pytest

from rafka_shards.records.batch import validate_batches
from rafka_shards.records.builder import Record, build_batch
from rafka_shards.shard.flusher import FsyncPool, GroupCommitFlusher
from rafka_shards.storage.config import LogConfig
from rafka_shards.storage.log import FlushJob, PartitionLog

WAIT_S = 60.0  # generous: only a hang reaches it


class _Gate:
    """Holds the flush jobs of one log until opened: a slow disk, on demand."""

    def __init__(self) -> None:
        self.opened = threading.Event()
        self.entered = threading.Event()


class _GatedJob(FlushJob):
    def __init__(self, inner: FlushJob, gate: _Gate, order: list[str], name: str) -> None:
        self.__dict__.update(inner.__dict__)
        self._gate, self._order, self._name = gate, order, name

    def run(self) -> None:
        self._gate.entered.set()
        assert self._gate.opened.wait(WAIT_S)
        self._order.append(self._name)
        super().run()


class _Partition:
    """What the flusher uses of a partition: its log and the callback after a job (``Partition.on_flushed``)."""

    def __init__(self, directory: Path, name: str, order: list[str]) -> None:
        self.name = name
        self.log = PartitionLog.open(directory / name, LogConfig(), 0)
        self.gate = _Gate()
        self.gate.opened.set()
        self.flushed: list[int] = []  # durable offset at each on_flushed
        self.changed = asyncio.Event()
        begin = self.log.flush_begin

        def gated_begin() -> FlushJob | None:
            job = begin()
            return None if job is None else _GatedJob(job, self.gate, order, name)

        self.log.flush_begin = gated_begin  # type: ignore[method-assign]

    def append(self, value_bytes: int, count: int = 1) -> int:
        buf = bytearray(build_batch([Record(None, b"v" * value_bytes, 0) for _ in range(count)]))
        return self.log.append(buf, validate_batches(buf, max_batch_bytes=10**8), 0, 0).last_offset + 1

    def on_flushed(self) -> None:
        self.flushed.append(self.log.durable_offset)
        self.changed.set()

    async def durable_at_least(self, offset: int) -> None:
        while self.log.durable_offset < offset:
            self.changed.clear()
            await asyncio.wait_for(self.changed.wait(), WAIT_S)


async def _until(condition: object, what: str) -> None:
    for _ in range(int(WAIT_S / 0.005)):
        if condition():  # type: ignore[operator]
            return
        await asyncio.sleep(0.005)
    raise AssertionError(f"timed out waiting for {what}")


def test_a_partition_is_released_by_its_own_fsync_not_the_slowest_one(tmp_path: Path) -> None:
    async def run() -> None:
        order: list[str] = []
        slow, fast = _Partition(tmp_path, "slow", order), _Partition(tmp_path, "fast", order)
        flusher = GroupCommitFlusher(2, interval_ms=None)
        task = asyncio.create_task(flusher.run())
        slow.gate.opened.clear()
        slow_end = slow.append(1000)
        flusher.mark_dirty(slow)  # type: ignore[arg-type]
        await _until(slow.gate.entered.is_set, "the slow job to start")
        fast_end = fast.append(10)
        flusher.mark_dirty(fast)  # type: ignore[arg-type]
        await fast.durable_at_least(fast_end)  # while the slow partition's fsync still hangs
        assert slow.log.durable_offset == 0 and order == ["fast"]
        slow.gate.opened.set()
        await slow.durable_at_least(slow_end)
        flusher.stop()
        await asyncio.wait_for(task, WAIT_S)

    asyncio.run(run())


def test_one_job_per_partition_in_flight_and_writes_meanwhile_join_the_next(tmp_path: Path) -> None:
    async def run() -> None:
        order: list[str] = []
        p = _Partition(tmp_path, "p", order)
        flusher = GroupCommitFlusher(4, interval_ms=None)
        task = asyncio.create_task(flusher.run())
        p.gate.opened.clear()
        first = p.append(10)
        flusher.mark_dirty(p)  # type: ignore[arg-type]
        await _until(p.gate.entered.is_set, "the first job to start")
        ends = []
        for _ in range(5):  # written while the first fsync runs: one more job covers them all
            ends.append(p.append(10))
            flusher.mark_dirty(p)  # type: ignore[arg-type]
            await asyncio.sleep(0)
        assert order == [] and p.log.durable_offset == 0
        p.gate.opened.set()
        await p.durable_at_least(ends[-1])
        assert p.flushed == [first, ends[-1]] and order == ["p", "p"]
        flusher.stop()
        await asyncio.wait_for(task, WAIT_S)

    asyncio.run(run())


def test_the_pool_runs_the_smallest_waiting_job_first(tmp_path: Path) -> None:
    async def run() -> None:
        order: list[str] = []
        blocker, big, small = (_Partition(tmp_path, n, order) for n in ("blocker", "big", "small"))
        flusher = GroupCommitFlusher(1, interval_ms=None)  # one thread: the others queue behind the blocker
        task = asyncio.create_task(flusher.run())
        blocker.gate.opened.clear()
        blocker.append(10)
        flusher.mark_dirty(blocker)  # type: ignore[arg-type]
        await _until(blocker.gate.entered.is_set, "the blocking job to start")
        big_end = big.append(1000, count=50)
        flusher.mark_dirty(big)  # type: ignore[arg-type]
        await asyncio.sleep(0.05)  # the big job is queued first
        small_end = small.append(10)
        flusher.mark_dirty(small)  # type: ignore[arg-type]
        await asyncio.sleep(0.05)
        blocker.gate.opened.set()
        await big.durable_at_least(big_end)
        await small.durable_at_least(small_end)
        assert order == ["blocker", "small", "big"]
        flusher.stop()
        await asyncio.wait_for(task, WAIT_S)

    asyncio.run(run())


def test_a_cut_while_a_job_runs_keeps_the_durable_offset_below_it(tmp_path: Path) -> None:
    async def run() -> None:
        order: list[str] = []
        p = _Partition(tmp_path, "p", order)
        flusher = GroupCommitFlusher(1, interval_ms=None)
        task = asyncio.create_task(flusher.run())
        for _ in range(3):
            p.append(10)
        p.gate.opened.clear()
        end = p.append(10)
        flusher.mark_dirty(p)  # type: ignore[arg-type]
        await _until(p.gate.entered.is_set, "the job to start")
        p.log.truncate_to(2)  # a follower cutting a divergent tail: offsets 2, 3 go
        assert p.append(10) == 3  # a different batch at offset 2, not fsynced by the job in flight
        p.gate.opened.set()
        await _until(lambda: len(p.flushed) == 1, "the job to complete")
        assert p.log.durable_offset == 2 < end
        flusher.mark_dirty(p)  # type: ignore[arg-type]
        await p.durable_at_least(3)
        flusher.stop()
        await asyncio.wait_for(task, WAIT_S)

    asyncio.run(run())


def test_stop_flushes_what_is_dirty_and_waits_for_the_jobs_in_flight(tmp_path: Path) -> None:
    async def run() -> None:
        order: list[str] = []
        a, b = _Partition(tmp_path, "a", order), _Partition(tmp_path, "b", order)
        flusher = GroupCommitFlusher(2, interval_ms=60_000)  # durability=flush: nothing starts before the interval
        task = asyncio.create_task(flusher.run())
        a_end, b_end = a.append(10), b.append(10)
        flusher.mark_dirty(a)  # type: ignore[arg-type]
        flusher.mark_dirty(b)  # type: ignore[arg-type]
        await asyncio.sleep(0.05)
        assert a.log.durable_offset == b.log.durable_offset == 0
        flusher.stop()
        await asyncio.wait_for(task, WAIT_S)
        assert (a.log.durable_offset, b.log.durable_offset) == (a_end, b_end)

    asyncio.run(run())


def test_a_failed_fsync_ends_the_flusher_with_its_error(tmp_path: Path) -> None:
    class _Failing(FlushJob):
        def __init__(self) -> None:
            super().__init__([], 1, None, 0)

        def run(self) -> None:
            raise OSError(5, "Input/output error")

    async def run() -> None:
        p = _Partition(tmp_path, "p", [])
        p.append(10)
        p.log.flush_begin = _Failing  # type: ignore[method-assign,assignment]
        flusher = GroupCommitFlusher(1, interval_ms=None)
        task = asyncio.create_task(flusher.run())
        flusher.mark_dirty(p)  # type: ignore[arg-type]
        with pytest.raises(OSError, match="Input/output"):
            await asyncio.wait_for(task, WAIT_S)
        assert p.log.durable_offset == 0 and p.flushed == []

    asyncio.run(run())


def test_the_pool_runs_what_was_submitted_before_shutdown(tmp_path: Path) -> None:
    async def run() -> None:
        pool = FsyncPool(1)
        log = PartitionLog.open(tmp_path / "p", LogConfig(), 0)
        done: list[BaseException | None] = []
        for _ in range(3):
            buf = bytearray(build_batch([Record(None, b"x", 0)]))
            log.append(buf, validate_batches(buf, max_batch_bytes=10**6), 0, 0)
            job = log.flush_begin()
            assert job is not None
            pool.submit(job, done.append)
        await asyncio.get_running_loop().run_in_executor(None, pool.shutdown)
        await _until(lambda: len(done) == 3, "the completions")
        assert done == [None, None, None]
        with pytest.raises(RuntimeError):
            pool.submit(FlushJob([], 0, None, 0), done.append)

    asyncio.run(run())
