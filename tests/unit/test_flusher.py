"""The group-commit flusher: partitions flush as independent pipelines, small jobs first, real files on disk."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator
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


@contextlib.asynccontextmanager
async def _running(threads: int, interval_ms: int | None = None) -> AsyncIterator[GroupCommitFlusher]:
    """A flusher task for the test's body, stopped (and waited for) after it."""
    flusher = GroupCommitFlusher(threads, interval_ms=interval_ms)
    task = asyncio.create_task(flusher.run())
    try:
        yield flusher
    finally:
        flusher.stop()
        await asyncio.wait_for(task, WAIT_S)


def _write(flusher: GroupCommitFlusher, p: _Partition, value_bytes: int = 10, count: int = 1) -> int:
    """Append to ``p`` and tell the flusher, as the partition manager does; the new log end."""
    end = p.append(value_bytes, count)
    flusher.mark_dirty(p)  # type: ignore[arg-type]
    return end


async def _held(flusher: GroupCommitFlusher, p: _Partition) -> int:
    """A write whose fsync job starts and then hangs until ``p.gate.opened`` is set; the new log end."""
    p.gate.opened.clear()
    end = _write(flusher, p)
    await _until(p.gate.entered.is_set, f"{p.name}'s job to start")
    return end


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
        async with _running(2) as flusher:
            slow_end = await _held(flusher, slow)
            await fast.durable_at_least(_write(flusher, fast))  # while the slow partition's fsync still hangs
            assert slow.log.durable_offset == 0 and order == ["fast"]
            slow.gate.opened.set()
            await slow.durable_at_least(slow_end)

    asyncio.run(run())


def test_one_job_per_partition_in_flight_and_writes_meanwhile_join_the_next(tmp_path: Path) -> None:
    async def run() -> None:
        order: list[str] = []
        p = _Partition(tmp_path, "p", order)
        async with _running(4) as flusher:
            first = await _held(flusher, p)
            ends = []
            for _ in range(5):  # written while the first fsync runs: one more job covers them all
                ends.append(_write(flusher, p))
                await asyncio.sleep(0)
            assert order == [] and p.log.durable_offset == 0
            p.gate.opened.set()
            await p.durable_at_least(ends[-1])
            assert p.flushed == [first, ends[-1]] and order == ["p", "p"]

    asyncio.run(run())


def test_the_pool_runs_the_smallest_waiting_job_first(tmp_path: Path) -> None:
    async def run() -> None:
        order: list[str] = []
        blocker, big, small = (_Partition(tmp_path, n, order) for n in ("blocker", "big", "small"))
        async with _running(1) as flusher:  # one thread: the others queue behind the blocker
            await _held(flusher, blocker)
            big_end = _write(flusher, big, 1000, count=50)
            await asyncio.sleep(0.05)  # the big job is queued first
            small_end = _write(flusher, small)
            await asyncio.sleep(0.05)
            blocker.gate.opened.set()
            await big.durable_at_least(big_end)
            await small.durable_at_least(small_end)
            assert order == ["blocker", "small", "big"]

    asyncio.run(run())


def test_a_cut_while_a_job_runs_keeps_the_durable_offset_below_it(tmp_path: Path) -> None:
    async def run() -> None:
        p = _Partition(tmp_path, "p", [])
        async with _running(1) as flusher:
            for _ in range(3):
                p.append(10)
            end = await _held(flusher, p)
            p.log.truncate_to(2)  # a follower cutting a divergent tail: offsets 2, 3 go
            assert p.append(10) == 3  # a different batch at offset 2, not fsynced by the job in flight
            p.gate.opened.set()
            await _until(lambda: len(p.flushed) == 1, "the job to complete")
            assert p.log.durable_offset == 2 < end
            flusher.mark_dirty(p)  # type: ignore[arg-type]
            await p.durable_at_least(3)

    asyncio.run(run())


def test_stop_flushes_what_is_dirty_and_waits_for_the_jobs_in_flight(tmp_path: Path) -> None:
    async def run() -> None:
        a, b = _Partition(tmp_path, "a", []), _Partition(tmp_path, "b", [])
        async with _running(2, interval_ms=60_000) as flusher:  # durability=flush: nothing before the interval
            a_end, b_end = _write(flusher, a), _write(flusher, b)
            await asyncio.sleep(0.05)
            assert a.log.durable_offset == b.log.durable_offset == 0
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
