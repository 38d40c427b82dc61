"""Several idempotent producers through partition leader fail-overs (issue 13): every acknowledged record is in the
log exactly once, at the offset it was acknowledged at, and no producer dies of OUT_OF_ORDER_SEQUENCE_NUMBER.

Followers copy chunks that interleave many producers; a follower that becomes leader must judge each producer's
retries against that producer's own batches (before the fix it filed a whole chunk under its first producer)."""

from __future__ import annotations

import collections
import time

import pytest
from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition

from tests.integration.helpers import admin_call
from tests.integration.test_cluster import Cluster, _isr_full, _partitions, _wait, _wait_visible, cluster

pytestmark = pytest.mark.integration

__all__ = ["cluster"]  # the fixture, imported for this module's tests

PRODUCERS = 3
PARTITIONS = 2


def _read_log(bootstrap: str, topic: str) -> dict[int, list[tuple[int, bytes]]]:
    """Every record of every partition up to its high watermark: partition -> [(offset, value)]."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "unused", "enable.auto.commit": False})
    ends = {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in range(PARTITIONS)}
    consumer.assign([TopicPartition(topic, p, 0) for p in range(PARTITIONS)])
    out: dict[int, list[tuple[int, bytes]]] = {p: [] for p in range(PARTITIONS)}
    deadline = time.monotonic() + 60
    while any(not out[p] or out[p][-1][0] + 1 < ends[p] for p in range(PARTITIONS) if ends[p] > 0):
        assert time.monotonic() < deadline, f"could not read to the high watermarks {ends}"
        m = consumer.poll(0.5)
        if m is not None and m.error() is None:
            out[m.partition()].append((m.offset(), m.value()))
    consumer.close()
    return out


class _Stream:
    """Idempotent acks=all producers; what each was told, per message."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.topic = topic
        self.acked: dict[bytes, tuple[int, int]] = {}  # value -> (partition, offset)
        self.errors: collections.Counter[str] = collections.Counter()
        self.fatal: list[str] = []
        self.producers = [
            Producer(
                {
                    "bootstrap.servers": bootstrap,
                    "enable.idempotence": True,
                    "acks": "all",
                    "linger.ms": 2,
                    "message.timeout.ms": 120_000,
                    "error_cb": self._error,
                }
            )
            for _ in range(PRODUCERS)
        ]
        self.sent = 0

    def _error(self, err: KafkaError) -> None:
        if err.fatal():
            self.fatal.append(str(err))

    def _report(self, err: KafkaError | None, msg: object) -> None:
        if err is None:
            self.acked[msg.value()] = (msg.partition(), msg.offset())  # type: ignore[attr-defined]
        else:
            self.errors[err.name()] += 1

    def send(self, n: int) -> None:
        for _ in range(n):
            for i, p in enumerate(self.producers):
                value = b"%d-%06d" % (i, self.sent)
                p.produce(self.topic, value=value, partition=self.sent % PARTITIONS, on_delivery=self._report)
                p.poll(0)
            self.sent += 1
            if self.sent % 50 == 0:
                time.sleep(0.005)  # about 10k messages/s in all: several batches per fetch, interleaved

    def flush(self) -> None:
        for p in self.producers:
            assert p.flush(180) == 0


def test_idempotent_producers_through_leader_failovers_lose_nothing_and_write_nothing_twice(
    cluster: Cluster, topic_name: str
) -> None:
    raft_leader = cluster.leader()
    watcher = cluster.nodes[raft_leader]
    status, body = admin_call(
        watcher.admin,
        "POST",
        "/v1/topics",
        {
            "name": topic_name,
            "partitions": PARTITIONS,
            "replication_factor": 3,
            "configs": {"min.insync.replicas": "2"},
        },
    )
    assert status == 201, body
    _wait_visible(cluster, topic_name, PARTITIONS)
    _wait("every ISR full", lambda: _isr_full(watcher, topic_name))
    # The node leading partition 0 is the victim; keep the Raft leader out of it (another fault).
    led = int(str(_partitions(watcher, topic_name)[0]["leader"]))
    if led // 10 + 1 == raft_leader:
        target = next(b for b in (0, 10, 20) if b // 10 + 1 != raft_leader)
        path = f"/v1/partitions/{topic_name}/0/transfer_leadership"
        assert admin_call(watcher.admin, "POST", path, {"target": target})[0] == 200
        _wait("the transfer", lambda: _partitions(watcher, topic_name)[0]["leader"] == target)
        led = target
    victim = cluster.nodes[led // 10 + 1]

    stream = _Stream(watcher.bootstrap, topic_name)
    send = stream.send
    send(1500)
    victim.kill()  # the partition leader's node, mid-stream: a follower that copied interleaved chunks takes over
    send(1500)
    stream.flush()
    victim.launch()
    victim.wait_ready()
    _wait("the restarted node to rejoin every ISR", lambda: _isr_full(watcher, topic_name), timeout_s=60)
    send(500)  # it follows again, copying interleaved chunks
    stream.flush()
    # Leadership of every partition to the restarted node: it judges the same producers' next batches.
    for part in range(PARTITIONS):
        path = f"/v1/partitions/{topic_name}/{part}/transfer_leadership"
        assert admin_call(watcher.admin, "POST", path, {"target": led})[0] == 200
    _wait(
        "the restarted node to lead every partition",
        lambda: all(p["leader"] == led for p in _partitions(watcher, topic_name)),
    )
    send(1500)
    stream.flush()

    assert not stream.fatal, stream.fatal
    log = _read_log(watcher.bootstrap, topic_name)
    at: dict[tuple[int, int], bytes] = {}
    where: dict[bytes, list[tuple[int, int]]] = collections.defaultdict(list)
    for part, records in log.items():
        for offset, value in records:
            at[(part, offset)] = value
            where[value].append((part, offset))
    duplicated = {v: w for v, w in where.items() if len(w) > 1}
    lost = [v for v in stream.acked if v not in where]
    misplaced = {v: (po, at.get(po)) for v, po in stream.acked.items() if v in where and at.get(po) != v}
    assert not duplicated, f"{len(duplicated)} duplicated, e.g. {list(duplicated.items())[:3]}"
    assert not lost, f"{len(lost)} acknowledged records lost, e.g. {lost[:3]}"
    assert not misplaced, f"{len(misplaced)} misplaced, e.g. {list(misplaced.items())[:3]}"
    for i in range(PRODUCERS):  # each producer's records in send order within each partition
        for part, records in log.items():
            mine = [v for _, v in records if v.startswith(b"%d-" % i)]
            assert mine == sorted(mine), f"producer {i} reordered in partition {part}"
    assert len(stream.acked) == PRODUCERS * stream.sent, (len(stream.acked), dict(stream.errors))
    print(f"{len(stream.acked)} acknowledged across 2 fail-overs, 0 lost, 0 duplicated, errors {dict(stream.errors)}")
