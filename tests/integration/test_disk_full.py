"""A full disk: produce answers KAFKA_STORAGE_ERROR, nothing acknowledged is lost or corrupted, and the shard serves
again once space is freed, without a restart.

The node runs on a small ext4 filesystem of its own (a loop-mounted image, no reserved blocks) mounted in a mount
namespace the test creates (``unshare(1)``), so nothing else on the machine fills up. The test fills and frees that
filesystem from outside, through ``/proc/PID/root``. The image outlives the node: a restart mounts it again.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from rafka_shards.model import ErrorCode
from rafka_shards.records.builder import Record, build_batch
from tests.conftest import Broker
from tests.integration.helpers import admin_call, raw_produce

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        os.geteuid() != 0 or not all(shutil.which(tool) for tool in ("unshare", "mkfs.ext4")),
        reason="needs root, unshare(1) and mkfs.ext4 to mount a small filesystem in a mount namespace",
    ),
]

MIB = 1024 * 1024
DISK_BYTES = 64 * MIB
VALUE_BYTES = 60 * 1024
TOPIC = "full"
ATTEMPTS_MAX = 400  # bounds every produce loop (each attempt is one request)


class DiskNode:
    """A one-shard node whose data directory is the root of its own small filesystem."""

    def __init__(self, tmp_path: Path, min_free_bytes: int) -> None:
        self.image = tmp_path / "disk.img"
        self.mount = tmp_path / "mnt"
        self.mount.mkdir()
        with open(self.image, "wb") as f:
            f.truncate(DISK_BYTES)
        subprocess.run(["mkfs.ext4", "-q", "-F", "-m", "0", str(self.image)], check=True, timeout=60)
        wrapper = [
            "unshare",
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            'mount -o loop "$1" "$2" && shift 2 && exec "$@"',
            "sh",
            str(self.image),
            str(self.mount),
        ]
        extra = ["--storage-min-free-bytes", str(min_free_bytes), "--log-segment-bytes", str(4 * MIB)]
        self.broker = Broker(self.mount / "data", extra_args=extra, wrapper=wrapper)
        self.acked: list[bytes] = []
        self._n = 0

    @property
    def inside(self) -> Path:
        """The node's filesystem as the node sees it (its mount namespace), from outside."""
        assert self.broker.proc is not None
        return Path(f"/proc/{self.broker.proc.pid}/root{self.mount}")

    def free_bytes(self) -> int:
        st = os.statvfs(self.inside)
        return st.f_bavail * st.f_frsize

    def fill(self, leave_bytes: int) -> None:
        """Take all but ``leave_bytes`` of the free space (real blocks: fallocate)."""
        fd = os.open(self.inside / "filler", os.O_WRONLY | os.O_CREAT, 0o644)
        try:
            os.posix_fallocate(fd, 0, max(1, self.free_bytes() - leave_bytes))
        finally:
            os.close(fd)

    def free(self) -> None:
        (self.inside / "filler").unlink()

    def produce(self) -> tuple[int, str | None]:
        """One acks=all batch of one ~60 KiB record; remembered if acknowledged. The error code and message."""
        self._n += 1
        value = b"%08d" % self._n + bytes(VALUE_BYTES)
        resp = raw_produce(self.broker.port, TOPIC, build_batch([Record(None, value, int(time.time() * 1000))]))
        if resp.error_code == 0:
            self.acked.append(value)
        return int(resp.error_code), resp.error_message

    def produce_until(self, code: ErrorCode) -> str | None:
        """Produce until an answer has ``code``; its message."""
        for _ in range(ATTEMPTS_MAX):
            got, message = self.produce()
            if got == code:
                return message
            assert got in (ErrorCode.NONE, ErrorCode.KAFKA_STORAGE_ERROR), (got, message)
            time.sleep(0.05)
        raise AssertionError(f"no {code.name} in {ATTEMPTS_MAX} produce requests\n{self.broker.log()}")

    def read_all(self) -> list[bytes]:
        consumer = Consumer(
            {"bootstrap.servers": self.broker.bootstrap, "group.id": "disk-full", "enable.auto.commit": False}
        )
        consumer.assign([TopicPartition(TOPIC, 0, OFFSET_BEGINNING)])
        got: list[tuple[int, bytes]] = []
        deadline = time.monotonic() + 120
        try:
            while len(got) < len(self.acked) and time.monotonic() < deadline:
                m = consumer.poll(0.5)
                if m is not None and m.error() is None:
                    offset, value = m.offset(), m.value()
                    assert offset is not None and value is not None
                    got.append((offset, value))
        finally:
            consumer.close()
        assert [o for o, _ in got] == list(range(len(got)))  # dense: no hole, no batch twice
        return [v for _, v in got]


@pytest.fixture
def guarded(tmp_path: Path) -> Iterator[DiskNode]:
    yield from _running(DiskNode(tmp_path, min_free_bytes=8 * MIB))


@pytest.fixture
def unguarded(tmp_path: Path) -> Iterator[DiskNode]:
    yield from _running(DiskNode(tmp_path, min_free_bytes=0))


def _running(node: DiskNode) -> Iterator[DiskNode]:
    node.broker.start()
    try:
        code, body = admin_call(node.broker.admin, "POST", "/v1/topics", {"name": TOPIC, "partitions": 1})
        assert code == 201, body
        yield node
    finally:
        if node.broker.alive():
            assert node.broker.stop() == 0, node.broker.log()


def _fill_until_refused(node: DiskNode, leave_bytes: int) -> tuple[list[int], str]:
    """Some acknowledged batches, then the disk filled to ``leave_bytes``, then produce until refused: the shard
    pids before the fill and the refusal's message."""
    for _ in range(10):
        assert node.produce()[0] == ErrorCode.NONE
    shards = node.broker.shard_pids()
    node.fill(leave_bytes)
    message = node.produce_until(ErrorCode.KAFKA_STORAGE_ERROR)
    assert message is not None
    return shards, message


def _freed_and_served_again(node: DiskNode, shards: list[int]) -> None:
    """Space freed: the same shard (no restart) takes produce again, and a restarted node reads back exactly what
    was acknowledged, in order, and nothing else."""
    assert node.read_all() == node.acked  # reads went on while produce was refused
    node.free()
    node.produce_until(ErrorCode.NONE)
    assert node.broker.shard_pids() == shards
    assert node.broker.stop() == 0, node.broker.log()
    node.broker.start()
    assert node.read_all() == node.acked


def test_under_the_free_space_threshold_produce_is_refused_and_served_again_once_space_is_freed(
    guarded: DiskNode,
) -> None:
    shards, message = _fill_until_refused(guarded, leave_bytes=4 * MIB)
    assert "storage_min_free_bytes" in message
    assert guarded.free_bytes() >= 3 * MIB  # refused before the disk was full: nothing was written
    _freed_and_served_again(guarded, shards)


def test_a_write_that_meets_a_full_disk_is_undone_and_the_shard_stays_up(unguarded: DiskNode) -> None:
    """No threshold: the write itself fails with ENOSPC. The partial batch is cut off, the client gets
    KAFKA_STORAGE_ERROR, and the log stays exactly what was acknowledged."""
    shards, message = _fill_until_refused(unguarded, leave_bytes=2 * MIB)
    assert "No space left on device" in message
    for _ in range(5):  # more attempts on the full disk: each is refused and undone
        assert unguarded.produce()[0] == ErrorCode.KAFKA_STORAGE_ERROR
    _freed_and_served_again(unguarded, shards)
