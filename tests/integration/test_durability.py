"""Restart and crash: everything acknowledged survives a graceful restart and a SIGKILL during an acks=all stream."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from tests.conftest import Broker

pytestmark = pytest.mark.integration

PRODUCER = textwrap.dedent(
    """
    import sys
    from confluent_kafka import Producer
    bootstrap, topic, out_path, partitions = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    out = open(out_path, "w", buffering=1)
    p = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 2, "message.timeout.ms": 60000})
    def on_delivery(err, msg):
        if err is None:
            out.write(f"{msg.partition()} {msg.offset()} {msg.value().decode()}\\n")
    i = 0
    while i < 2_000_000:
        try:
            p.produce(topic, value=f"m{i}".encode(), partition=i % partitions, on_delivery=on_delivery)
            i += 1
        except BufferError:
            p.poll(0.01)
        p.poll(0)
    """
)


def _consume_all(bootstrap: str, topic: str, partitions: int) -> dict[int, list[tuple[int, bytes]]]:
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "check", "enable.auto.commit": False})
    ends = {p: c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in range(partitions)}
    c.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(partitions)])
    got: dict[int, list[tuple[int, bytes]]] = {p: [] for p in range(partitions)}
    deadline = time.monotonic() + 60
    while any(len(got[p]) < ends[p] for p in got) and time.monotonic() < deadline:
        m = c.poll(0.5)
        if m is None:
            continue
        assert m.error() is None, m.error()
        got[m.partition()].append((m.offset(), m.value()))
    c.close()
    return got


def test_restart_keeps_data_and_topics(broker: Broker, topic_name: str) -> None:
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    for f in admin.create_topics([NewTopic(topic_name, 2, 1, config={"retention.ms": "86400000"})]).values():
        f.result(10)
    p = Producer({"bootstrap.servers": broker.bootstrap, "acks": "all"})
    for i in range(1000):
        p.produce(topic_name, value=b"v%d" % i, partition=i % 2)
    assert p.flush(30) == 0
    before = _consume_all(broker.bootstrap, topic_name, 2)
    broker.restart()
    after = _consume_all(broker.bootstrap, topic_name, 2)
    assert after == before and sum(len(v) for v in after.values()) == 1000
    md = AdminClient({"bootstrap.servers": broker.bootstrap}).list_topics(timeout=10)
    assert len(md.topics[topic_name].partitions) == 2


@pytest.mark.parametrize("acked_before_kill", [300, 3000])
def test_sigkill_during_acks_all_stream_loses_nothing_acknowledged(
    broker: Broker, topic_name: str, tmp_path: Path, acked_before_kill: int
) -> None:
    partitions = 3
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    for f in admin.create_topics([NewTopic(topic_name, partitions, 1)]).values():
        f.result(10)
    acks_file = tmp_path / "acked.txt"
    child = subprocess.Popen(
        [sys.executable, "-c", PRODUCER, broker.bootstrap, topic_name, str(acks_file), str(partitions)],
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if acks_file.exists() and acks_file.read_text().count("\n") >= acked_before_kill:
                break
            time.sleep(0.02)
        broker.kill()  # SIGKILL mid-stream
        time.sleep(0.3)
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
    acked = [line.split() for line in acks_file.read_text().splitlines() if line.count(" ") == 2]
    assert len(acked) >= acked_before_kill
    broker.start()
    got = _consume_all(broker.bootstrap, topic_name, partitions)
    for records in got.values():
        assert [o for o, _ in records] == list(range(len(records)))  # dense, in order
        values = [int(v.decode()[1:]) for _, v in records]
        assert values == sorted(values) and len(set(values)) == len(values)  # in send order, no duplicates
    stored = {(p, o): v for p, records in got.items() for o, v in records}
    for p, o, v in acked:
        assert stored.get((int(p), int(o))) == v.encode(), f"acknowledged {v} at {p}/{o} is missing"
