"""Broker behaviours beyond one client: flush durability mode, long polling, background retention, SIGINT."""

from __future__ import annotations

import datetime
import io
import signal
import socket
import struct
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic
from kio.schema.fetch.v4.request import FetchPartition, FetchRequest, FetchTopic
from kio.schema.fetch.v4.response import FetchResponse
from kio.serial import entity_reader, entity_writer

from rafka_shards.records.builder import decode_batches
from tests.conftest import Broker

pytestmark = pytest.mark.integration


def _produce(bootstrap: str, topic: str, n: int, size: int = 10, **conf: object) -> None:
    p = Producer({"bootstrap.servers": bootstrap, "acks": "all", **conf})
    for i in range(n):
        p.produce(topic, value=(b"%08d" % i).ljust(size, b"."), partition=0)
    assert p.flush(30) == 0


def _count(bootstrap: str, topic: str) -> int:
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "c", "enable.auto.commit": False})
    c.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
    n = 0
    idle = 0
    while idle < 4:
        m = c.poll(0.5)
        if m is None:
            idle += 1
            continue
        assert m.error() is None
        n += 1
    c.close()
    return n


def test_flush_durability_mode(tmp_path: Path, topic_name: str) -> None:
    b = Broker(tmp_path / "data", ["--durability", "flush", "--flush-interval-ms", "50"])
    b.start()
    try:
        _produce(b.bootstrap, topic_name, 500)
        assert _count(b.bootstrap, topic_name) == 500
        b.restart()
        assert _count(b.bootstrap, topic_name) == 500
    finally:
        if b.alive():
            assert b.stop() == 0


def _fetch(port: int, topic: str, offset: int, max_wait_ms: int, min_bytes: int) -> Any:
    req = FetchRequest(
        replica_id=-1,
        max_wait=datetime.timedelta(milliseconds=max_wait_ms),
        min_bytes=min_bytes,
        max_bytes=1 << 20,
        isolation_level=0,
        topics=(
            FetchTopic(
                topic=topic, partitions=(FetchPartition(partition=0, fetch_offset=offset, partition_max_bytes=1 << 20),)
            ),
        ),
    )
    buf = io.BytesIO()
    entity_writer(FetchRequest)(buf, req)
    payload = struct.pack(">hhih", 1, 4, 9, 0) + buf.getvalue()
    with socket.create_connection(("127.0.0.1", port), timeout=60) as s:
        s.sendall(struct.pack(">i", len(payload)) + payload)
        data = b""
        while len(data) < 4 or len(data) < 4 + struct.unpack(">i", data[:4])[0]:
            chunk = s.recv(65536)
            assert chunk
            data += chunk
    resp, _ = entity_reader(FetchResponse)(data[8:], 0)
    return resp.responses[0].partitions[0]


def test_fetch_long_polls_until_data_arrives(broker: Broker, topic_name: str) -> None:
    _produce(broker.bootstrap, topic_name, 1)
    result: list[Any] = []
    started = time.monotonic()
    t = threading.Thread(target=lambda: result.append(_fetch(broker.port, topic_name, 1, 30_000, 1)))
    t.start()
    time.sleep(0.5)
    assert t.is_alive()  # waiting: nothing beyond offset 1 yet
    _produce(broker.bootstrap, topic_name, 3)
    t.join(40)
    elapsed = time.monotonic() - started
    (p,) = result
    assert p.error_code == 0 and p.high_watermark == 4
    assert [r.offset for r in decode_batches(p.records)] == [1, 2, 3]
    assert elapsed < 25  # woken by the produce, not by the 30 s max_wait


def test_fetch_without_data_returns_after_max_wait(broker: Broker, topic_name: str) -> None:
    _produce(broker.bootstrap, topic_name, 1)
    p = _fetch(broker.port, topic_name, 1, 200, 1)
    assert p.error_code == 0 and not p.records


def test_background_retention_deletes_old_segments(tmp_path: Path, topic_name: str) -> None:
    b = Broker(tmp_path / "data", ["--log-retention-check-interval-ms", "200"])
    b.start()
    try:
        admin = AdminClient({"bootstrap.servers": b.bootstrap})
        configs = {"segment.bytes": "20000", "retention.bytes": "50000"}
        for f in admin.create_topics([NewTopic(topic_name, 1, 1, config=configs)]).values():
            f.result(10)
        _produce(b.bootstrap, topic_name, 400, size=1000, **{"batch.num.messages": 10})
        c = Consumer({"bootstrap.servers": b.bootstrap, "group.id": "c"})
        # A retention pass may run while the produce is still going: wait for one after it.
        deadline = time.monotonic() + 20
        limit = 50_000 + 20_000 + 2_000  # retention.bytes + the active segment + one batch
        while time.monotonic() < deadline:
            low, high = c.get_watermark_offsets(TopicPartition(topic_name, 0), timeout=5)
            size = sum(f.stat().st_size for f in (b.data_dir / "kafka" / f"{topic_name}-0").glob("*.log"))
            if low > 0 and size < limit:
                break
            time.sleep(0.2)
        c.close()
        assert low > 0 and high == 400
        assert size < limit
    finally:
        assert b.stop() == 0


def test_sigint_is_a_clean_shutdown(broker: Broker, topic_name: str) -> None:
    _produce(broker.bootstrap, topic_name, 10)
    assert broker.proc is not None
    broker.proc.send_signal(signal.SIGINT)
    assert broker.proc.wait(30) == 0
    broker.start()
    assert _count(broker.bootstrap, topic_name) == 10
