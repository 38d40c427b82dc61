"""Deleting segment files without stalling the disk for the shard's fsyncs.

Unlinking a large file frees all its extents in one journal transaction; on a filesystem mounted with ``discard``
(common on cloud disks) the freed blocks are also trimmed as that transaction commits. Every fsync that has to wait
for that commit waits for all of it: measured on this project's machine, unlinking 1 GiB of segments the cleaner
replaced made the shard's group-commit fsyncs 13-38 ms for half a second (5-10 ms otherwise), which alone set the
produce p99 of the window. So files that are no longer part of a log (renamed ``*.deleted`` first, which is quick
and crash-safe: the log removes leftovers when it opens) are freed gradually: truncated from the end a chunk at a
time, paced to ``bytes_per_s``, then unlinked (RocksDB's DeleteScheduler does the same for the same reason).

Runs in a thread of the shard (``loop.run_in_executor``): every call here is a blocking system call or a wait.
``stop`` ends a deletion in progress at once (the shard is stopping); what is left is removed when the log next
opens.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

DELETE_CHUNK_BYTES = 8 * 1024 * 1024  # freed per truncation: one small journal transaction, one small trim


class GradualDeleter:
    """Frees files a chunk at a time at no more than ``bytes_per_s`` (<= 0: each file unlinked at once)."""

    def __init__(
        self,
        bytes_per_s: float,
        chunk_bytes: int = DELETE_CHUNK_BYTES,
        clock: Callable[[], float] = time.monotonic,
        wait: Callable[[threading.Event, float], bool] = threading.Event.wait,
    ) -> None:
        self._bytes_per_s = bytes_per_s
        self._chunk = chunk_bytes
        self._clock = clock
        self._wait = wait  # (event, seconds) -> event set: the tests' simulated time passes here
        self._stopping = threading.Event()

    def stop(self) -> None:
        self._stopping.set()

    def delete(self, paths: Sequence[Path]) -> None:
        """Free and unlink every file of ``paths`` (a missing one is skipped); returns early once stopped."""
        started = self._clock()
        freed = 0
        for path in paths:
            if self._stopping.is_set():
                return
            try:
                fd = os.open(path, os.O_WRONLY)
            except FileNotFoundError:
                continue
            try:
                size = os.fstat(fd).st_size
                while size > self._chunk and self._bytes_per_s > 0:
                    size -= self._chunk
                    os.ftruncate(fd, size)
                    freed += self._chunk
                    if self._pace(started, freed):
                        return
            finally:
                os.close(fd)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
            freed += size
            if size and self._bytes_per_s > 0 and self._pace(started, freed):
                return

    def _pace(self, started: float, freed: int) -> bool:
        """Wait until ``freed`` bytes are within the rate since ``started``; True if stopped meanwhile."""
        due = started + freed / self._bytes_per_s
        return self._wait(self._stopping, max(0.0, due - self._clock()))
