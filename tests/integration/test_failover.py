"""Fail-over when a process dies, on three real nodes: a SIGKILLed shard is fenced on its supervisor's word, a
SIGKILLed node (also the partition leader's, also the Raft leader's) by the active controller's liveness probe, long
before the (here deliberately long) session timeout; idempotent acks=all produce resumes on every partition and
nothing acknowledged is lost. A paused node is not fenced by the probe. Replica fetches are accepted only from
registered brokers at their current broker epoch. A follower that fell below its leader's log start catches up.

No test asserts speed: each waits (with generous bounds) for the condition. ``failover_times.py`` measures."""

from __future__ import annotations

import io
import os
import signal
import socket
import struct
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition
from kio.schema.fetch.v15 import request as fetch_req
from kio.schema.fetch.v15.response import FetchResponse
from kio.schema.types import BrokerId
from kio.serial import entity_reader, entity_writer
from kio.static.primitive import i8, i32, i32Timedelta, i64

from tests.conftest import Broker, stop_all
from tests.integration.helpers import admin_call, recv_frame
from tests.integration.test_cluster import Cluster

pytestmark = pytest.mark.integration

SESSION_TIMEOUT_MS = 120_000  # far beyond every wait below: only the fast paths can fence within them
PARTITIONS = 4
WAIT_S = 60


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    c = Cluster(tmp_path)
    for b in c.nodes.values():
        b.extra_args += ["--broker-session-timeout-ms", str(SESSION_TIMEOUT_MS)]
        b.extra_args += ["--log-retention-check-interval-ms", "200"]
    c.start()
    yield c
    stop_all(c.nodes.values())


def _wait(what: str, check: object, timeout_s: float = WAIT_S) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if check():  # type: ignore[operator]
                return
        except OSError:
            pass  # a node's admin API restarting
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def _any(cluster: Cluster) -> Broker:
    return next(b for b in cluster.nodes.values() if b.alive())


def _partitions(cluster: Cluster, topic: str) -> list[dict[str, object]]:
    t = _any(cluster).admin_get(f"/v1/topics/{topic}")
    assert isinstance(t, dict)
    return list(t["partitions"])


def _broker(cluster: Cluster, broker_id: int, via: Broker | None = None) -> dict[str, object]:
    listed = (via or _any(cluster)).admin_get("/v1/brokers")
    assert isinstance(listed, list)
    return dict(next(b for b in listed if b["broker_id"] == broker_id))


def _isr_full(cluster: Cluster, topic: str) -> bool:
    return all(len(p["isr"]) == 3 and p["leader"] != -1 for p in _partitions(cluster, topic))  # type: ignore[arg-type]


def _create(cluster: Cluster, topic: str, partitions: int, configs: dict[str, str]) -> None:
    body = {"name": topic, "partitions": partitions, "replication_factor": 3, "configs": configs}
    status, answer = admin_call(cluster.nodes[cluster.leader()].admin, "POST", "/v1/topics", body)
    assert status == 201, answer
    _wait("every ISR full", lambda: _isr_full(cluster, topic))


class Load:
    """One idempotent acks=all producer writing to every partition every 10 ms from a thread."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.topic = topic
        self.producer = Producer(
            {"bootstrap.servers": bootstrap, "acks": "all", "enable.idempotence": True, "linger.ms": 1}
        )
        self.acked: list[tuple[int, int, bytes, float, float]] = []  # (partition, offset, value, sent, acked)
        self.errors: list[str] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        n = 0
        while not self._stop.is_set() and n < 1_000_000:
            sent = time.monotonic()
            for p in range(PARTITIONS):
                value = b"%d-%d" % (p, n)
                self.producer.produce(
                    self.topic, value, partition=p, on_delivery=lambda e, m, s=sent: self._ack(e, m, s)
                )
            n += 1
            self.producer.poll(0.01)

    def _ack(self, err: object, msg: object, sent: float) -> None:
        with self._lock:
            if err is not None:
                self.errors.append(str(err))
            else:
                self.acked.append((msg.partition(), msg.offset(), msg.value(), sent, time.monotonic()))  # type: ignore[attr-defined]

    def resumed_after(self, t: float) -> float | None:
        """Seconds from ``t`` until every partition had acknowledged a record sent after ``t`` (None: not yet)."""
        first: dict[int, float] = {}
        with self._lock:
            for p, _, _, sent, acked in self.acked:
                if sent > t and p not in first:
                    first[p] = acked
        return max(first.values()) - t if len(first) == PARTITIONS else None

    def resumed_since(self, t: float) -> bool:
        return self.resumed_after(t) is not None

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        assert self.producer.flush(WAIT_S) == 0
        assert not self.errors, self.errors[:5]


def _read_back(bootstrap: str, topic: str) -> dict[tuple[int, int], bytes]:
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": uuid.uuid4().hex, "enable.auto.commit": False})
    ends = {p: c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in range(PARTITIONS)}
    c.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(PARTITIONS)])
    got: dict[tuple[int, int], bytes] = {}
    last = dict.fromkeys(ends, -1)
    deadline = time.monotonic() + WAIT_S
    while any(last[p] < ends[p] - 1 for p in ends) and time.monotonic() < deadline:
        m = c.poll(0.5)
        if m is None or m.error() is not None:
            continue
        got[(m.partition(), m.offset())] = m.value()
        last[m.partition()] = m.offset()
    c.close()
    return got


def kill_when_steady(victim: Broker, load: Load, *, shard_only: bool) -> float:
    """Once every partition acknowledges new records, SIGKILL the victim node (or its first shard); when."""
    steady = time.monotonic()
    _wait("steady produce", lambda: load.resumed_since(steady))
    pid = victim.shard_pids()[0]
    killed_at = time.monotonic()
    if shard_only:
        os.kill(pid, signal.SIGKILL)
    else:
        victim.kill()
    return killed_at


def _kill_and_check(cluster: Cluster, topic: str, victim_node: int, *, shard_only: bool = False) -> None:
    """SIGKILL the victim during the load; produce resumes on every partition and the dead broker is fenced (or, for
    a shard, replaced by a new incarnation) while its session still runs; then every acknowledged record is read."""
    victim = cluster.nodes[victim_node]
    broker_id = (victim_node - 1) * 10
    before = _broker(cluster, broker_id)
    survivors = [b for n, b in cluster.nodes.items() if n != victim_node]
    load = Load(",".join(b.bootstrap for b in survivors), topic)
    try:
        killed_at = kill_when_steady(victim, load, shard_only=shard_only)
        _wait("produce on every partition after the kill", lambda: load.resumed_since(killed_at))
        if shard_only:
            _wait("a new incarnation", lambda: _broker(cluster, broker_id)["incarnation"] != before["incarnation"])
            assert "fencing it" in victim.log() and "exited (killed by SIGKILL)" in victim.log()
        else:
            # Fenced by a fast path (the session is 120 s here); produce may resume first when a follower left the
            # ISR by lag, so wait for the fencing rather than expect it at once on a busy machine.
            _wait("the dead broker fenced", lambda: bool(_broker(cluster, broker_id)["fenced"]))
            after = _broker(cluster, broker_id)
            assert after["fenced"] and after["incarnation"] == before["incarnation"], after
            for p in _partitions(cluster, topic):
                assert broker_id not in p["isr"] and p["leader"] != broker_id, p  # type: ignore[operator]
    finally:
        load.close()
    if not shard_only:
        victim.launch()
        victim.wait_ready()
    _wait("every ISR full again", lambda: _isr_full(cluster, topic))
    got = _read_back(survivors[0].bootstrap, topic)
    missing = [(p, o) for p, o, v, _, _ in load.acked if got.get((p, o)) != v]
    assert not missing, f"{len(missing)} acknowledged records not read back at their offsets: {missing[:5]}"


def _not_raft_leader(cluster: Cluster) -> int:
    leader = cluster.leader()
    return next(n for n in (1, 2, 3) if n != leader)


def test_sigkill_of_a_shard_is_fenced_on_its_supervisors_word(cluster: Cluster, topic_name: str) -> None:
    _create(cluster, topic_name, PARTITIONS, {"min.insync.replicas": "2"})
    _kill_and_check(cluster, topic_name, _not_raft_leader(cluster), shard_only=True)


def test_sigkill_of_a_partition_leaders_node_is_fenced_by_the_controllers_probe(
    cluster: Cluster, topic_name: str
) -> None:
    _create(cluster, topic_name, PARTITIONS, {"min.insync.replicas": "2"})
    victim = _not_raft_leader(cluster)
    assert any(p["leader"] == (victim - 1) * 10 for p in _partitions(cluster, topic_name))  # it leads something
    _kill_and_check(cluster, topic_name, victim)


def test_sigkill_of_the_raft_leaders_node_is_fenced_by_the_new_leaders_probe(cluster: Cluster, topic_name: str) -> None:
    _create(cluster, topic_name, PARTITIONS, {"min.insync.replicas": "2"})
    _kill_and_check(cluster, topic_name, cluster.leader())


def test_a_paused_node_is_not_fenced_by_the_probe(cluster: Cluster, topic_name: str) -> None:
    """SIGSTOP: connections stay open and unanswered, so probes time out; only the session may fence it."""
    _create(cluster, topic_name, PARTITIONS, {})
    victim_node = _not_raft_leader(cluster)
    victim = cluster.nodes[victim_node]
    watcher = cluster.nodes[cluster.leader()]  # the paused node's admin API does not answer
    load = Load(watcher.bootstrap, topic_name)
    try:
        victim.signal_all(signal.SIGSTOP)
        time.sleep(4)  # several probe timeouts (1 s each)
        assert not _broker(cluster, (victim_node - 1) * 10, via=watcher)["fenced"]
    finally:
        victim.signal_all(signal.SIGCONT)
        load.close()
    assert "fencing it" not in "".join(b.log(tail=10**8) for b in cluster.nodes.values())


def _fetch_as_replica(port: int, topic_id: uuid.UUID, replica: int, epoch: int) -> int:
    request = fetch_req.FetchRequest(
        replica_state=fetch_req.ReplicaState(replica_id=BrokerId(replica), replica_epoch=i64(epoch)),
        max_wait=i32Timedelta.parse(timedelta(milliseconds=0)),
        min_bytes=i32(0),
        max_bytes=i32(1 << 20),
        isolation_level=i8(0),
        session_id=i32(0),
        session_epoch=i32(-1),
        topics=(
            fetch_req.FetchTopic(
                topic_id=topic_id,
                partitions=(
                    fetch_req.FetchPartition(partition=i32(0), fetch_offset=i64(0), partition_max_bytes=i32(1 << 20)),
                ),
            ),
        ),
        forgotten_topics_data=(),
        rack_id="",
    )
    buf = io.BytesIO()
    entity_writer(fetch_req.FetchRequest)(buf, request)
    header = struct.pack(">hhih", 1, 15, 7, 4) + b"test" + b"\x00"
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(struct.pack(">i", len(header) + len(buf.getvalue())) + header + buf.getvalue())
        frame = recv_frame(sock)
    response, _ = entity_reader(FetchResponse)(frame[5:], 0)  # correlation id, empty tagged fields
    return int(response.responses[0].partitions[0].error_code.value)


def test_replica_fetches_need_a_registered_unfenced_broker_at_its_current_epoch(
    cluster: Cluster, topic_name: str
) -> None:
    _create(cluster, topic_name, 1, {})
    p = _partitions(cluster, topic_name)[0]
    leader = int(str(p["leader"]))
    follower = next(int(str(r)) for r in p["replicas"] if r != leader)  # type: ignore[attr-defined]
    topic = _any(cluster).admin_get(f"/v1/topics/{topic_name}")
    assert isinstance(topic, dict)
    topic_id = uuid.UUID(str(topic["topic_id"]))
    port = int(str(_broker(cluster, leader)["port"]))
    epoch = int(str(_broker(cluster, follower)["epoch"]))
    assert epoch > 0
    assert _fetch_as_replica(port, topic_id, follower, epoch) == 0
    assert _fetch_as_replica(port, topic_id, follower, epoch - 1) == 77  # STALE_BROKER_EPOCH: an earlier incarnation
    assert _fetch_as_replica(port, topic_id, 99, -1) == 6  # NOT_LEADER_OR_FOLLOWER: not a registered broker
    assert _fetch_as_replica(port, topic_id, -1, -1) == 0  # a consumer is unaffected


def test_a_follower_below_the_leaders_log_start_restarts_its_log_there_and_rejoins_the_isr(
    cluster: Cluster, topic_name: str
) -> None:
    """Kafka's truncateFullyAndStartAt: while a follower's node is down, the leader's retention deletes segments
    past the follower's log end; back, the follower must continue from the leader's log start (it looped on
    OFFSET_OUT_OF_RANGE before), catch up, rejoin the ISR and hold the same records at the same offsets."""
    configs = {"segment.bytes": "4096", "retention.bytes": "8192", "retention.ms": "-1"}
    body = {"name": topic_name, "partitions": 1, "replication_factor": 3, "configs": configs}
    status, answer = admin_call(cluster.nodes[cluster.leader()].admin, "POST", "/v1/topics", body)
    assert status == 201, answer
    _wait("every ISR full", lambda: all(len(p["isr"]) == 3 for p in _partitions(cluster, topic_name)))  # type: ignore[arg-type]
    p = _partitions(cluster, topic_name)[0]
    leader_node = int(str(p["leader"])) // 10 + 1
    victim_node = next(n for n in (1, 2, 3) if n not in (leader_node, cluster.leader()))
    victim = cluster.nodes[victim_node]
    leader = cluster.nodes[leader_node]
    producer = Producer({"bootstrap.servers": leader.bootstrap, "acks": "all", "linger.ms": 5})
    for n in range(200):
        producer.produce(topic_name, b"before-%05d" % n + b"x" * 100, partition=0)
    assert producer.flush(WAIT_S) == 0
    assert victim.stop() == 0
    _wait("the stopped follower out of the ISR", lambda: len(_partitions(cluster, topic_name)[0]["isr"]) == 2)  # type: ignore[arg-type]
    follower_end = 200

    def leader_start() -> int:
        mine = next(q for q in _partitions_on(leader, topic_name) if q["partition"] == 0)
        return int(str(mine["log_start_offset"]))

    n = 0
    while leader_start() <= follower_end:
        for _ in range(100):
            producer.produce(topic_name, b"during-%05d" % n + b"x" * 100, partition=0)
            n += 1
        assert producer.flush(WAIT_S) == 0
        assert n < 100_000, "retention never deleted past the follower's end"
        time.sleep(0.2)
    expected = {off: v for (part, off), v in _read_back_one(leader.bootstrap, topic_name).items() if part == 0}
    victim.start()
    _wait("the follower back in the ISR", lambda: len(_partitions(cluster, topic_name)[0]["isr"]) == 3)  # type: ignore[arg-type]
    assert "restarting the log there" in victim.log()
    victim_broker = (victim_node - 1) * 10
    status, moved = admin_call(
        victim.admin, "POST", f"/v1/partitions/{topic_name}/0/transfer_leadership", {"target": victim_broker}
    )
    assert status == 200, moved
    _wait("the follower to lead", lambda: _partitions(cluster, topic_name)[0]["leader"] == victim_broker)
    got = {off: v for (part, off), v in _read_back_one(victim.bootstrap, topic_name).items() if part == 0}
    assert got, "nothing read from the caught-up follower"
    assert max(got) == max(expected)
    wrong = [off for off, v in got.items() if expected.get(off, v) != v]
    assert not wrong, f"records differ at offsets {wrong[:5]}"


def _partitions_on(b: Broker, topic: str) -> list[dict[str, object]]:
    t = b.admin_get(f"/v1/topics/{topic}")
    assert isinstance(t, dict)
    return list(t["partitions"])


def _read_back_one(bootstrap: str, topic: str) -> dict[tuple[int, int], bytes]:
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": uuid.uuid4().hex, "enable.auto.commit": False})
    low, high = c.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)
    c.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
    got: dict[tuple[int, int], bytes] = {}
    deadline = time.monotonic() + WAIT_S
    while (not got or max(o for _, o in got) < high - 1) and time.monotonic() < deadline:
        m = c.poll(0.5)
        if m is None or m.error() is not None:
            continue
        got[(0, m.offset())] = m.value()
    c.close()
    assert got and max(o for _, o in got) == high - 1, (low, high, len(got))
    return got
