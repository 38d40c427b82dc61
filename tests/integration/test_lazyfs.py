"""bench.chaos.lazyfs: a real FUSE mount that loses unsynced writes when the plug is pulled.

First the filesystem alone (fsync survives, unsynced data and truncations do not, metadata passes through, reads
merge buffered data, mmap works, a clean stop loses nothing), then a real broker on it: every message acknowledged
with acks=all is read back after SIGKILL + plug pull + restart, and the Raft metadata log (the topic) survives too.
A broker in Kafka's interval-flush mode, which acknowledges before fsync, does lose acknowledged messages: the
negative control that shows the plug pull really drops data.
"""

from __future__ import annotations

import mmap
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from bench.chaos import lazyfs
from bench.chaos.lazyfs import LazyFS
from tests.conftest import Broker

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(lazyfs.available() is not None, reason=f"{lazyfs.available()}"),
]

READ_TIMEOUT_S = 60.0


@pytest.fixture
def fs(tmp_path: Path) -> Iterator[LazyFS]:
    with LazyFS(tmp_path / "backing", tmp_path / "mnt") as mounted:
        yield mounted
    assert not lazyfs._mounted(tmp_path / "mnt")


def test_fsynced_data_survives_a_plug_pull_and_unsynced_data_does_not(fs: LazyFS) -> None:
    m = fs.mountpoint
    fd = os.open(m / "f", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        os.pwrite(fd, b"a" * 10_000, 0)
        os.fsync(fd)
        os.pwrite(fd, b"B" * 100, 50)  # overwrite inside synced data, unsynced
        os.pwrite(fd, b"tail", 10_000)  # append, unsynced
        assert os.pread(fd, 160, 0) == b"a" * 50 + b"B" * 100 + b"a" * 10  # reads merge the buffered pages
        assert os.fstat(fd).st_size == 10_004
        assert (fs.backing / "f").stat().st_size == 10_000  # the append is not in the backing file yet
        assert fs.stats()[1] == 1
    finally:
        os.close(fd)
    assert (m / "f").read_bytes()[:60] == b"a" * 50 + b"B" * 10  # close(2) does not make it durable...
    dropped, files = fs.pull_plug()
    assert dropped > 0 and files == 1
    assert (m / "f").read_bytes() == b"a" * 10_000  # ...and the plug pull takes it away
    assert fs.stats() == (0, 0)


def test_an_unsynced_truncation_is_undone_and_a_synced_one_is_kept(fs: LazyFS) -> None:
    path = fs.mountpoint / "seg"
    with open(path, "wb") as f:
        f.write(b"x" * 9000)
        f.flush()
        os.fsync(f.fileno())
    fd = os.open(path, os.O_RDWR)
    try:
        os.ftruncate(fd, 100)
        assert os.fstat(fd).st_size == 100
        os.ftruncate(fd, 200)  # extended again: the cut bytes read as zeros, not as the old data
        assert os.pread(fd, 200, 0) == b"x" * 100 + bytes(100)
    finally:
        os.close(fd)
    fs.pull_plug()
    assert path.read_bytes() == b"x" * 9000
    fd = os.open(path, os.O_RDWR)
    try:
        os.ftruncate(fd, 100)
        os.fsync(fd)
    finally:
        os.close(fd)
    fs.pull_plug()
    assert path.read_bytes() == b"x" * 100
    path.write_bytes(b"new")  # O_TRUNC and a write, never synced
    os.rename(path, path)  # a no-op rename keeps the file's unsynced data
    assert path.read_bytes() == b"new"
    fs.pull_plug()
    assert path.read_bytes() == b"x" * 100


def test_metadata_passes_through_and_write_atomically_survives(fs: LazyFS) -> None:
    from controller.files import write_atomically

    m = fs.mountpoint
    (m / "dir" / "sub").mkdir(parents=True)
    write_atomically(m / "dir" / "state", b"durable")  # temp file, fsync, rename, fsync dir: the broker's way
    (m / "dir" / "unsynced").write_bytes(b"lost")
    os.rename(m / "dir" / "unsynced", m / "dir" / "renamed")  # its unsynced data moves with it
    assert (m / "dir" / "renamed").read_bytes() == b"lost"
    assert sorted(os.listdir(m / "dir")) == ["renamed", "state", "sub"]
    fs.pull_plug()
    assert (m / "dir" / "state").read_bytes() == b"durable"
    assert (m / "dir" / "renamed").read_bytes() == b""  # created (metadata), but its data was never synced
    os.unlink(m / "dir" / "renamed")
    assert sorted(os.listdir(fs.backing / "dir")) == ["state", "sub"]


def test_mmap_and_o_append_work_and_a_clean_stop_keeps_everything(tmp_path: Path) -> None:
    backing, mnt = tmp_path / "b", tmp_path / "m"
    with LazyFS(backing, mnt):
        fd = os.open(mnt / "index", os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            for k in range(100):
                os.write(fd, k.to_bytes(8, "big"))  # the broker's index files are written like this
            with mmap.mmap(fd, 800, prot=mmap.PROT_READ) as mm:  # segment recovery reads through mmap
                assert [int.from_bytes(mm[i * 8 : i * 8 + 8], "big") for i in range(100)] == list(range(100))
        finally:
            os.close(fd)
    assert not lazyfs._mounted(mnt)
    assert (backing / "index").read_bytes() == b"".join(k.to_bytes(8, "big") for k in range(100))


# ---- a real broker on lazyfs --------------------------------------------------------------------------------------


def _produce_acked(bootstrap: str, topic: str, count: int, partitions: int) -> dict[tuple[int, int], bytes]:
    """Send ``count`` messages with acks=all; (partition, offset) -> value of every acknowledged one."""
    acked: dict[tuple[int, int], bytes] = {}

    def on_delivery(err: object, msg: object) -> None:
        if err is None:
            acked[(msg.partition(), msg.offset())] = msg.value()  # type: ignore[attr-defined]

    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 5})
    for k in range(count):
        value = b"m-%d-%s" % (k, uuid.uuid4().hex.encode())
        producer.produce(topic, value, partition=k % partitions, on_delivery=on_delivery)
        producer.poll(0)
    assert producer.flush(60) == 0
    return acked


def _read(bootstrap: str, topic: str, partitions: int) -> dict[tuple[int, int], bytes]:
    """Every record of the topic, up to each partition's high watermark: (partition, offset) -> value."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"g-{uuid.uuid4()}", "enable.auto.commit": False})
    got: dict[tuple[int, int], bytes] = {}
    try:
        ends = {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in range(partitions)}
        consumer.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
        next_offset = dict.fromkeys(range(partitions), 0)
        deadline = time.monotonic() + READ_TIMEOUT_S
        while any(next_offset[p] < ends[p] for p in range(partitions)) and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is not None and msg.error() is None:
                got[(msg.partition(), msg.offset())] = msg.value()
                next_offset[msg.partition()] = msg.offset() + 1
        assert all(next_offset[p] >= ends[p] for p in range(partitions)), f"read {next_offset} of {ends}"
    finally:
        consumer.close()
    return got


def _broker_on(fs: LazyFS, tmp_path: Path, extra: list[str]) -> Broker:
    b = Broker(fs.mountpoint / "data", extra_args=extra)
    b.log_path = tmp_path / "broker.log"  # outside the mount: the log is no data under test
    return b


def _crash_and_restart(b: Broker, fs: LazyFS) -> tuple[int, int]:
    b.kill()  # SIGKILL: nothing of the node runs when the power goes
    lost = fs.pull_plug()
    b.start()
    return lost


@pytest.mark.parametrize("partitions", [2])
def test_every_acknowledged_message_survives_sigkill_and_a_plug_pull(
    fs: LazyFS, tmp_path: Path, partitions: int
) -> None:
    b = _broker_on(fs, tmp_path, [])
    b.start()
    try:
        admin = AdminClient({"bootstrap.servers": b.bootstrap})
        admin.create_topics([NewTopic("power", partitions, 1)])["power"].result(30)
        acked = _produce_acked(b.bootstrap, "power", 300, partitions)
        assert len(acked) == 300

        dropped, files = _crash_and_restart(b, fs)

        # The Raft metadata log came back: the topic is still there with its partitions.
        md = AdminClient({"bootstrap.servers": b.bootstrap}).list_topics("power", timeout=10)
        assert len(md.topics["power"].partitions) == partitions
        got = _read(b.bootstrap, "power", partitions)
        missing = {k: v for k, v in acked.items() if got.get(k) != v}
        assert missing == {}, f"{len(missing)} acknowledged messages lost (plug pull dropped {dropped}B in {files})"
        # The log goes on after recovery: new writes are appended behind the recovered ones.
        more = _produce_acked(b.bootstrap, "power", 20, partitions)
        assert min(offset for (_, offset) in more) >= 150
    finally:
        if b.alive():
            assert b.stop() == 0, b.log()


def test_interval_flush_mode_loses_acknowledged_messages_on_power_loss(fs: LazyFS, tmp_path: Path) -> None:
    """The negative control: acks=all answered before fsync (Kafka's interval mode) is not durable."""
    b = _broker_on(fs, tmp_path, ["--durability", "flush", "--flush-interval-ms", "3600000"])
    b.start()
    try:
        admin = AdminClient({"bootstrap.servers": b.bootstrap})
        admin.create_topics([NewTopic("power", 1, 1)])["power"].result(30)
        acked = _produce_acked(b.bootstrap, "power", 100, 1)
        assert len(acked) == 100

        dropped, files = _crash_and_restart(b, fs)

        assert dropped > 0 and files >= 1
        got = _read(b.bootstrap, "power", 1)
        assert len(got) < len(acked)
    finally:
        if b.alive():
            assert b.stop() == 0, b.log()


def test_stop_leaves_no_mount_even_when_the_server_died(tmp_path: Path) -> None:
    fs = LazyFS(tmp_path / "b", tmp_path / "m")
    fs.start()
    assert fs.proc is not None
    fs.proc.kill()  # the FUSE server dies: the mount is left as "transport endpoint is not connected"
    fs.proc.wait(30)
    assert lazyfs._mounted(tmp_path / "m")
    fs.stop()
    assert not lazyfs._mounted(tmp_path / "m")
    fs.start()  # and the same LazyFS can mount again
    (tmp_path / "m" / "f").write_bytes(b"x")
    fs.stop()
    assert (tmp_path / "b" / "f").read_bytes() == b"x"


def test_a_process_in_a_network_namespace_writes_through_the_mount(fs: LazyFS) -> None:
    """The verifier runs nodes under ``ip netns exec`` (a mount namespace of its own) on lazyfs data directories."""
    from bench.chaos import netns

    if netns.available() is not None:
        pytest.skip(str(netns.available()))
    path = fs.mountpoint / "f"
    code = (
        "import os, sys\n"
        "fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o644)\n"
        "os.write(fd, b'synced'); os.fsync(fd); os.write(fd, b'-unsynced')\n"
    )
    with netns.Net(1, f"lazyfs-{uuid.uuid4()}") as net:
        subprocess.run(net.wrap(0, [sys.executable, "-c", code, str(path)]), check=True, timeout=60)
    assert path.read_bytes() == b"synced-unsynced"
    assert fs.dirty_paths() == ["/f"]
    fs.pull_plug()
    assert path.read_bytes() == b"synced"
