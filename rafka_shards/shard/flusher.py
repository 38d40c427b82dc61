"""Group commit: one round of fsyncs covers every batch written before the round began.

Runs in a shard process. The event loop thread writes batches (``PartitionLog.append``, a write(2) into the page
cache) and marks the partition dirty; this task takes a ``FlushJob`` from every dirty partition and runs the fsyncs
on worker threads, so the loop keeps serving while the disk works. Batches written during a round join the next
round, which starts as soon as the current one ends: under load each fsync covers many produce requests, which is
how acks=all stays fast when every acknowledgement waits for the disk.

In durability=flush mode rounds run every ``flush_interval_ms`` instead of on demand (Kafka's log.flush.interval.ms).

An fsync that fails is fatal for the shard (as in PostgreSQL after 2018's fsyncgate: the page cache state is
unknown, so retrying could acknowledge lost data); the exception ends this task, and the shard stops.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import time
from collections.abc import Callable

from rafka_shards import event_loop
from rafka_shards.shard.partition import Partition
from rafka_shards.storage.log import FlushJob

log = logging.getLogger(__name__)


class GroupCommitFlusher:
    def __init__(
        self,
        threads: int,
        *,
        interval_ms: int | None,
        observe_fsync_seconds: Callable[[float], None] = lambda _s: None,
    ) -> None:
        self._executor = concurrent.futures.ThreadPoolExecutor(max_workers=threads, thread_name_prefix="fsync")
        self._interval_ms = interval_ms
        self._observe = observe_fsync_seconds
        # Bounded by the number of partitions this shard leads.
        self._dirty: set[Partition] = set()
        self._wake = asyncio.Event()
        self._stopping = False
        self.rounds = 0

    def mark_dirty(self, partition: Partition) -> None:
        self._dirty.add(partition)
        if self._interval_ms is None:
            self._wake.set()

    async def run(self) -> None:
        try:
            while True:
                if self._interval_ms is None:
                    await self._wake.wait()
                else:
                    with contextlib.suppress(TimeoutError):
                        await event_loop.within(self._wake.wait(), self._interval_ms / 1000)
                self._wake.clear()
                await self.flush_round()
                if self._stopping:
                    return
        finally:
            self._executor.shutdown(wait=True)

    async def flush_round(self) -> None:
        if not self._dirty:
            return
        dirty, self._dirty = self._dirty, set()
        work: list[tuple[Partition, FlushJob]] = []
        for p in dirty:
            job = p.log.flush_begin()
            if job is not None:
                work.append((p, job))
        if not work:
            for p in dirty:
                p.on_flushed()
            return
        loop = asyncio.get_running_loop()
        started = time.perf_counter()
        await asyncio.gather(*(loop.run_in_executor(self._executor, job.run) for _, job in work))
        self._observe(time.perf_counter() - started)
        self.rounds += 1
        for p, job in work:
            p.log.flush_complete(job)
        for p in dirty:
            p.on_flushed()

    def stop(self) -> None:
        """Ask the task to run a last round and return."""
        self._stopping = True
        self._wake.set()
