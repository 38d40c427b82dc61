"""Log compaction in a shard: which compacted partition to clean, the worker process that cleans it, the swap.

Runs in a shard process. Every ``log.cleaner.backoff.ms`` the shard looks at its compacted partitions (leaders and
followers alike: every replica cleans its own log, as in Kafka) and picks the one with the highest dirty ratio at or
above its ``min.cleanable.dirty.ratio``, or any whose oldest dirty segment is older than ``max.compaction.lag.ms``.
The pass itself (``rafka_shards.storage.cleaner.clean``) runs in a worker process of this shard, at a lower CPU
priority, so the shard's event loop never waits on it; only the swap (a few renames) runs on the loop. At most
``log.cleaner.threads`` passes run at once on the node: a pass holds one of that many ``flock``-ed slot files in
``data_dir/cleaner/``. A partition whose pass met a corrupt segment is logged, marked and skipped until it is
reopened; nothing of that pass is swapped in.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import dataclasses
import fcntl
import logging
import multiprocessing
import os
import signal
import weakref
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from pathlib import Path

import psutil

from rafka_shards import event_loop
from rafka_shards.config import BrokerConfig
from rafka_shards.ipc.channel import CleanerTotals
from rafka_shards.model import TopicPartition
from rafka_shards.shard.partition import Partition
from rafka_shards.storage.cleaner import MAP_ENTRY_BYTES, CleanerError, CleanJob, CleanResult, clean
from rafka_shards.storage.log import PartitionLog

log = logging.getLogger(__name__)

WORKER_NICENESS = 19  # the cleaner yields the CPU to the shards serving clients


def _worker_init(title: str) -> None:
    """In the worker process: a name in ``ps``, die with the shard, and run below its priority."""
    event_loop.name_process(title)
    with contextlib.suppress(OSError, AttributeError):
        import ctypes

        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    with contextlib.suppress(OSError):
        os.nice(WORKER_NICENESS)
    with contextlib.suppress(OSError, AttributeError, psutil.Error):
        psutil.Process().ionice(psutil.IOPRIO_CLASS_IDLE)  # its disk reads and writes wait for the shards' too
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the shard stops it


@contextlib.contextmanager
def _slot(directory: Path, slots: int) -> Iterator[bool]:
    """One of the node's ``slots`` cleaner slots, if one is free (yields False otherwise)."""
    directory.mkdir(parents=True, exist_ok=True)
    for i in range(slots):
        fd = os.open(directory / f"slot-{i}.lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue
        try:
            yield True
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)
        return
    yield False


class LogCleaner:
    def __init__(
        self,
        config: BrokerConfig,
        partitions: Callable[[], Mapping[TopicPartition, Partition]],
        now_ms: Callable[[], int],
        free_files: Callable[[Sequence[Path]], Awaitable[None]],
    ) -> None:
        self._config = config
        self._partitions = partitions
        self._now_ms = now_ms
        self._free_files = free_files  # the shard's paced deletion of files renamed aside
        self._pool: concurrent.futures.ProcessPoolExecutor | None = None
        self._failed_logs: weakref.WeakSet[PartitionLog] = weakref.WeakSet()  # reopened logs are tried again
        self.totals = CleanerTotals()  # since the shard started (for /metrics and the admin API)
        self.failed: dict[TopicPartition, str] = {}  # why, for partitions skipped until they are reopened

    def _executor(self) -> concurrent.futures.ProcessPoolExecutor:
        if self._pool is None:
            context = multiprocessing.get_context("spawn")
            title = f"node {self._config.node_id} broker {self._config.broker_id} log cleaner"
            self._pool = concurrent.futures.ProcessPoolExecutor(
                1, mp_context=context, initializer=_worker_init, initargs=(title,)
            )
        return self._pool

    async def run(self) -> None:
        interval_s = self._config.log_cleaner_backoff_ms / 1000
        while True:
            await asyncio.sleep(interval_s)
            if self._config.log_cleaner_threads > 0:
                await self.clean_once()

    def choose(self) -> tuple[TopicPartition, Partition] | None:
        """The partition to clean now: the dirtiest at or above its ratio, or one past max.compaction.lag.ms."""
        now = self._now_ms()
        best: tuple[float, TopicPartition, Partition] | None = None
        max_ratio = 0.0
        for tp, p in self._partitions().items():
            cfg = p.log.config
            if not cfg.compact or p.log in self._failed_logs:
                continue
            self.failed.pop(tp, None)
            ratio, dirty, _ = p.log.dirty_ratio(now)
            max_ratio = max(max_ratio, ratio)
            overdue = dirty > 0 and self._overdue(p, now)
            if (dirty > 0 and ratio >= cfg.min_cleanable_dirty_ratio) or overdue:
                score = 2.0 if overdue else ratio
                if best is None or score > best[0]:
                    best = (score, tp, p)
        self.totals = dataclasses.replace(self.totals, max_dirty_ratio=max_ratio)
        return None if best is None else (best[1], best[2])

    @staticmethod
    def _overdue(p: Partition, now_ms: int) -> bool:
        lag = p.log.config.max_compaction_lag_ms
        first_dirty = p.log.first_dirty_offset
        for seg in p.log.segments[:-1]:
            if seg.next_offset > first_dirty and seg.max_timestamp >= 0:
                return now_ms - seg.max_timestamp > lag
        return False

    async def clean_once(self) -> CleanResult | None:
        """One pass over the partition ``choose`` picks, if a node slot is free; its result once swapped in."""
        chosen = self.choose()
        if chosen is None:
            return None
        tp, p = chosen
        config = self._config
        job = p.log.clean_job(
            self._now_ms(),
            p.producers.last_offsets(),
            map_entries_max=config.log_cleaner_dedupe_buffer_size // MAP_ENTRY_BYTES,
            io_bytes_per_s=float(config.log_cleaner_io_max_bytes_per_second),
        )
        if job is None:
            return None
        with _slot(config.data_dir / "cleaner", config.log_cleaner_threads) as got:
            if not got:
                return None
            result = await self._run_pass(tp, p, job)
        if result is None:
            return None
        if self._partitions().get(tp) is not p:
            return None  # closed or deleted meanwhile: its leftover cleaned files go when it is next opened
        swapped, aside = p.log.swap_cleaned(result, self._now_ms())
        await self._free_files(aside)  # paced: freeing a whole log's old segments at once stalls the shard's fsyncs
        t, done = self.totals, result.stats
        self.totals = dataclasses.replace(
            t,
            passes=t.passes + 1,
            bytes_read=t.bytes_read + done.bytes_read,
            bytes_written=t.bytes_written + done.bytes_written,
            seconds=t.seconds + done.seconds,
        )
        log.info(
            "%s: cleaned %d group(s) below offset %d in %.2f s: read %d bytes, wrote %d, kept %d of %d records",
            tp,
            swapped,
            result.cleaned_to,
            result.stats.seconds,
            result.stats.bytes_read,
            result.stats.bytes_written,
            result.stats.records_kept,
            result.stats.records_read,
        )
        return result

    async def _run_pass(self, tp: TopicPartition, p: Partition, job: CleanJob) -> CleanResult | None:
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._executor(), clean, job)
        except CleanerError as e:
            self._failed()
            self.failed[tp] = str(e)
            self._failed_logs.add(p.log)
            log.error("%s: the log cleaner skips this partition until it is reopened: %s", tp, e)
        except concurrent.futures.process.BrokenProcessPool:
            self._failed()
            self._pool = None  # the worker died (killed, out of memory): a new one next time
            log.error("%s: the log cleaner worker died during a pass; nothing of it is swapped in", tp)
        except OSError as e:
            self._failed()
            log.error("%s: the log cleaner could not read or write its files: %s", tp, e)
        return None

    def _failed(self) -> None:
        self.totals = dataclasses.replace(self.totals, failures=self.totals.failures + 1)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None
