"""Group commit: each partition's fsync covers every batch written to it before the fsync began.

Runs in a shard process. The event loop thread writes batches (``PartitionLog.append``, a write(2) into the page
cache) and marks the partition dirty; this task takes a ``FlushJob`` from each dirty partition and runs the fsyncs
on worker threads, so the loop keeps serving while the disk works.

Each partition is a pipeline of its own: at most one job of a partition is in flight (its jobs complete in order),
and batches written while it runs join the partition's next job, started on the flusher's turn after that one ends.
Under load each fsync covers many produce requests, which is how acks=all stays fast when every acknowledgement
waits for the disk. Partitions do not wait for each other: a partition's waiters are released when its own fsync
is done, not when the slowest fsync of the shard is.

The worker threads take the waiting jobs smallest first (bytes to flush). A consumer group's offset commit is a
batch of a few hundred bytes a client is blocked on; it goes ahead of the data partitions' jobs instead of queueing
behind them. A large job still runs once the threads are free of smaller ones: each
partition has one job at a time, so at most one small job per partition can pass it.

In durability=flush mode jobs start every ``flush_interval_ms`` instead of on demand (Kafka's log.flush.interval.ms).

An fsync that fails is fatal for the shard (as in PostgreSQL after 2018's fsyncgate: the page cache state is
unknown, so retrying could acknowledge lost data); the exception ends this task, and the shard stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import heapq
import itertools
import logging
import threading
import time
from collections.abc import Callable

from rafka_shards import event_loop
from rafka_shards.shard.partition import Partition
from rafka_shards.storage.log import FlushJob

log = logging.getLogger(__name__)

_Done = Callable[[BaseException | None], None]


class FsyncPool:
    """Worker threads that run ``FlushJob``s smallest first. ``done`` is called on the submitting loop's thread."""

    def __init__(self, threads: int) -> None:
        self._lock = threading.Lock()
        self._ready = threading.Condition(self._lock)
        # (size, sequence, job, loop, done); bounded by the partitions with a job in flight (one each).
        self._queue: list[tuple[int, int, FlushJob, asyncio.AbstractEventLoop, _Done]] = []
        self._sequence = itertools.count()  # equal sizes run in submission order
        self._closing = False
        self._threads = [
            threading.Thread(target=self._work, name=f"fsync-{i}", daemon=True) for i in range(max(1, threads))
        ]
        for t in self._threads:
            t.start()

    def submit(self, job: FlushJob, done: _Done) -> None:
        loop = asyncio.get_running_loop()
        with self._lock:
            if self._closing:
                raise RuntimeError("the fsync pool is shut down")
            heapq.heappush(self._queue, (job.size, next(self._sequence), job, loop, done))
            self._ready.notify()

    def _work(self) -> None:
        while True:
            with self._lock:
                while not self._queue and not self._closing:
                    self._ready.wait()
                if not self._queue:
                    return  # closing, and nothing left to run
                _size, _seq, job, loop, done = heapq.heappop(self._queue)
            error: BaseException | None = None
            try:
                job.run()
            except BaseException as e:  # noqa: BLE001 - handed to the loop, which stops the shard
                error = e
            with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits for the answer
                loop.call_soon_threadsafe(done, error)

    def shutdown(self) -> None:
        """Run the jobs already submitted, then stop the threads."""
        with self._lock:
            self._closing = True
            self._ready.notify_all()
        for t in self._threads:
            t.join()


class GroupCommitFlusher:
    def __init__(
        self,
        threads: int,
        *,
        interval_ms: int | None,
        observe_fsync_seconds: Callable[[float], None] = lambda _s: None,
    ) -> None:
        self._pool = FsyncPool(threads)
        self._interval_ms = interval_ms
        self._observe = observe_fsync_seconds
        # Both bounded by the number of partitions this shard holds.
        self._dirty: set[Partition] = set()
        self._in_flight: set[Partition] = set()
        self._wake = asyncio.Event()
        self._error: BaseException | None = None
        self._stopping = False

    def mark_dirty(self, partition: Partition) -> None:
        self._dirty.add(partition)
        if self._interval_ms is None:
            self._wake.set()

    async def run(self) -> None:
        try:
            while True:
                if self._interval_ms is None or self._stopping:
                    await self._wake.wait()
                else:
                    with contextlib.suppress(TimeoutError):
                        await event_loop.within(self._wake.wait(), self._interval_ms / 1000)
                self._wake.clear()
                if self._error is not None:
                    raise self._error
                self._start_jobs()
                if self._stopping and not self._in_flight and not self._dirty:
                    return
        finally:
            self._pool.shutdown()

    def _start_jobs(self) -> None:
        """A job for each dirty partition that has none in flight (the others start theirs when it completes)."""
        waiting: set[Partition] = set()
        for p in self._dirty:
            if p in self._in_flight:
                waiting.add(p)
                continue
            job = p.log.flush_begin()
            if job is None:
                p.on_flushed()
                continue
            self._in_flight.add(p)
            self._pool.submit(job, functools.partial(self._completed, p, job, time.perf_counter()))
        self._dirty = waiting

    def _completed(self, p: Partition, job: FlushJob, started: float, error: BaseException | None) -> None:
        self._in_flight.discard(p)
        if error is not None:
            if self._error is None:
                self._error = error
            self._wake.set()
            return
        self._observe(time.perf_counter() - started)
        p.log.flush_complete(job)
        p.on_flushed()
        if (p in self._dirty and self._interval_ms is None) or self._stopping:
            self._wake.set()

    def stop(self) -> None:
        """Ask the task to flush what is dirty, wait for every job in flight, and return."""
        self._stopping = True
        self._wake.set()
