"""The data directory's free space: produce is refused while it is under ``storage_min_free_bytes``.

Sans-IO but for one ``statvfs`` call, injected with the clock. Redpanda does the same (``storage_min_free_bytes``):
a broker whose disk fills up must not fail in the middle of a write it cannot finish (the metadata log, a segment
roll, an offset commit, the cleaner's output all need a little room). Below the threshold, produce requests get
KAFKA_STORAGE_ERROR (retriable: clients keep their records and retry) and nothing is written; replication, offset
commits and the controller keep the room that is left. Above it again (space freed, retention ran), produce works
at once, without a restart. A write that fails anyway (the threshold set to 0, another program filled the disk) is
undone by the log (``PartitionLog._write_failed``).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

from rafka_shards.model import ErrorCode, KafkaError

REFRESH_S = 0.1  # statvfs at most this often (a produce request checks every time)

StatVfs = Callable[[Path], os.statvfs_result]


def filesystem_space(path: Path, statvfs: StatVfs = os.statvfs) -> tuple[int, int]:
    """The size of the filesystem holding ``path`` and the bytes an unprivileged writer may still use on it."""
    st = statvfs(path)
    return st.f_blocks * st.f_frsize, st.f_bavail * st.f_frsize


class FreeSpaceGuard:
    def __init__(
        self,
        path: Path,
        min_free_bytes: int,
        *,
        clock: Callable[[], float] = time.monotonic,
        statvfs: StatVfs = os.statvfs,
    ) -> None:
        self._path = path
        self._min_free_bytes = min_free_bytes
        self._clock = clock
        self._statvfs = statvfs
        self._checked_at = -REFRESH_S - 1.0
        self._free = 0

    @property
    def free_bytes(self) -> int:
        now = self._clock()
        if now - self._checked_at >= REFRESH_S:
            _, self._free = filesystem_space(self._path, self._statvfs)
            self._checked_at = now
        return self._free

    def check(self) -> None:
        """KAFKA_STORAGE_ERROR while the free space is under the threshold."""
        free = self.free_bytes
        if free < self._min_free_bytes:
            raise KafkaError(
                ErrorCode.KAFKA_STORAGE_ERROR,
                f"the data directory's filesystem has {free} bytes free, under storage_min_free_bytes "
                f"({self._min_free_bytes}): produce is refused until space is freed",
            )
