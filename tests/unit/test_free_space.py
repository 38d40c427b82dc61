"""``FreeSpaceGuard``: produce is refused under the threshold and allowed again above it, with statvfs read at most
every ``REFRESH_S``."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from rafka_shards.model import ErrorCode, KafkaError
from rafka_shards.storage.free_space import REFRESH_S, FreeSpaceGuard, filesystem_space


class FakeDisk:
    def __init__(self, free_blocks: int) -> None:
        self.free_blocks = free_blocks
        self.calls = 0

    def statvfs(self, _path: Path) -> os.statvfs_result:
        self.calls += 1
        # f_bsize, f_frsize, f_blocks, f_bfree, f_bavail, f_files, f_ffree, f_favail, f_flag, f_namemax
        return os.statvfs_result((4096, 4096, 1000, self.free_blocks, self.free_blocks, 0, 0, 0, 0, 255))


def test_produce_is_refused_under_the_threshold_and_allowed_once_space_is_freed() -> None:
    disk, now = FakeDisk(free_blocks=100), [0.0]
    guard = FreeSpaceGuard(Path("/data"), min_free_bytes=50 * 4096, clock=lambda: now[0], statvfs=disk.statvfs)
    guard.check()
    assert guard.free_bytes == 100 * 4096
    assert filesystem_space(Path("/data"), FakeDisk(free_blocks=100).statvfs) == (1000 * 4096, 100 * 4096)
    disk.free_blocks = 49
    guard.check()  # read less than REFRESH_S ago: not read again
    assert disk.calls == 1
    now[0] += REFRESH_S
    with pytest.raises(KafkaError) as refused:
        guard.check()
    assert refused.value.code is ErrorCode.KAFKA_STORAGE_ERROR
    assert "200704 bytes free" in refused.value.message and "storage_min_free_bytes" in refused.value.message
    disk.free_blocks = 50
    now[0] += REFRESH_S
    guard.check()
    assert disk.calls == 3


def test_a_zero_threshold_never_refuses() -> None:
    guard = FreeSpaceGuard(Path("/data"), min_free_bytes=0, statvfs=FakeDisk(free_blocks=0).statvfs)
    guard.check()
