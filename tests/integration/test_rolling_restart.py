"""Rolling restart without errors (issue 17): a controlled shutdown moves partition and Raft leadership away before a
node stops, and ``ops/rolling_restart.py`` restarts a 3-node cluster one node at a time while an idempotent acks=all
producer and a consumer run, with no delivery error and every acknowledged record read back exactly once."""

from __future__ import annotations

import contextlib
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
from confluent_kafka import Consumer, KafkaError, Message, Producer, TopicPartition

from tests.conftest import Broker
from tests.integration.helpers import admin_call
from tests.integration.test_cluster import Cluster, _partitions, _wait

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
PARTITIONS = 3
RATE_PER_S = 100  # the producer's steady rate
MESSAGES_MAX = 30_000  # the producer stops here even if the restart is still running (300 s at the rate)
RESTART_TIMEOUT_S = 600  # the tool's whole run; each of its waits is bounded by WAIT_TIMEOUT_S
WAIT_TIMEOUT_S = 180
CONTROLLED_SHUTDOWN_TIMEOUT_MS = 20_000  # so a stop stays within conftest's STOP_TIMEOUT_S (30 s)


@pytest.fixture
def cluster3(tmp_path: Path) -> Iterator[Cluster]:
    """Three nodes; every process of theirs is gone at the end, also those the restart tool started."""
    c = Cluster(tmp_path, spare=0)
    for b in c.nodes.values():
        b.extra_args += ["--controlled-shutdown-timeout-ms", str(CONTROLLED_SHUTDOWN_TIMEOUT_MS)]
    try:
        c.start()
        yield c
    finally:
        _stop_all(c, tmp_path)


def _stop_all(c: Cluster, root: Path) -> None:
    """SIGTERM each node's supervisor (found by its controller's pid: the tool's nodes are not our children), then
    SIGKILL whatever process of the test's data directories is left."""
    supervisors = []
    for b in c.nodes.values():
        with contextlib.suppress(Exception):
            supervisors.append(psutil.Process(b.controller_pid()).parent())
    for p in supervisors:
        with contextlib.suppress(psutil.Error):
            p.send_signal(signal.SIGTERM)
    psutil.wait_procs([p for p in supervisors if p is not None], timeout=60)
    for b in c.nodes.values():
        if b.proc is not None:
            with contextlib.suppress(Exception):
                b.proc.wait(5)
    marker = str(root)
    for p in psutil.process_iter(["cmdline"]):
        with contextlib.suppress(psutil.Error):
            if marker in " ".join(p.info["cmdline"] or []):
                p.kill()


def _start_command(b: Broker) -> str:
    """The command line conftest's ``Broker.launch`` runs, as a shell command for the restart tool."""
    argv = [sys.executable, "-m", "rafka_shards", "serve", "--data-dir", str(b.data_dir), "--listen", b.bootstrap]
    argv += ["--shards", str(b.shards), "--admin-listen", f"127.0.0.1:{b.admin_port}", *b.extra_args]
    return "exec " + shlex.join(argv)


def _create_topic(c: Cluster, name: str) -> None:
    body = {"name": name, "partitions": PARTITIONS, "replication_factor": 3, "configs": {"min.insync.replicas": "2"}}
    assert admin_call(c.nodes[1].admin, "POST", "/v1/topics", body)[0] == 201
    for b in c.nodes.values():
        _wait(f"{name} on {b.admin}", lambda b=b: len(_partitions(b, name)) == PARTITIONS)  # type: ignore[misc]


def _health(b: Broker) -> dict[str, Any]:
    h = b.admin_get("/v1/cluster/health_overview")
    assert isinstance(h, dict)
    return h


class _Producer(threading.Thread):
    """An idempotent acks=all producer at a steady rate until told to stop; what the broker said of each record."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        super().__init__(name="producer", daemon=True)
        self.topic = topic
        self.stop_at = threading.Event()
        self.acked: dict[bytes, tuple[int, int]] = {}  # value -> (partition, offset)
        self.delivery_errors: list[str] = []
        self.client_errors: list[str] = []  # error_cb: transient ones (a broker down) are expected
        self.sent = 0
        self.producer = Producer(
            {
                "bootstrap.servers": bootstrap,
                "enable.idempotence": True,
                "acks": "all",
                "linger.ms": 5,
                "message.timeout.ms": 300_000,
                "error_cb": lambda e: self.client_errors.append(str(e)),
            }
        )

    def _delivered(self, err: KafkaError | None, msg: Message) -> None:
        value = msg.value()
        assert value is not None
        if err is not None:
            self.delivery_errors.append(f"{value!r}: {err}")
        else:
            self.acked[value] = (int(msg.partition() or 0), int(msg.offset() or 0))

    def run(self) -> None:
        start = time.monotonic()
        while self.sent < MESSAGES_MAX and not self.stop_at.is_set():
            value = f"m{self.sent:06d}".encode()
            self.producer.produce(self.topic, value, partition=self.sent % PARTITIONS, on_delivery=self._delivered)
            self.sent += 1
            self.producer.poll(0)
            time.sleep(max(0.0, start + self.sent / RATE_PER_S - time.monotonic()))
        remaining = self.producer.flush(300)
        if remaining:
            self.delivery_errors.append(f"{remaining} record(s) not delivered after flush(300)")


class _Consumer(threading.Thread):
    """Reads every partition from offset 0 while the restart runs: (offset, value) per partition."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        super().__init__(name="consumer", daemon=True)
        self.stop_at = threading.Event()
        self.read: dict[int, list[tuple[int, bytes]]] = {p: [] for p in range(PARTITIONS)}
        self.count = 0
        self.consumer = Consumer(
            {"bootstrap.servers": bootstrap, "group.id": "rolling-restart", "enable.auto.commit": False}
        )
        self.consumer.assign([TopicPartition(topic, p, 0) for p in range(PARTITIONS)])

    def run(self) -> None:
        try:
            while not self.stop_at.is_set():
                m = self.consumer.poll(0.2)
                if m is not None and m.error() is None:
                    value = m.value()
                    assert value is not None
                    self.read[int(m.partition() or 0)].append((int(m.offset() or 0), value))
                    self.count += 1
        finally:
            self.consumer.close()


def test_a_rolling_restart_under_an_idempotent_producer_loses_nothing_and_reports_no_error(
    cluster3: Cluster, topic_name: str, tmp_path: Path
) -> None:
    c = cluster3
    _create_topic(c, topic_name)
    bootstrap = ",".join(b.bootstrap for b in c.nodes.values())
    producer = _Producer(bootstrap, topic_name)
    consumer = _Consumer(bootstrap, topic_name)
    producer.start()
    consumer.start()
    try:
        _wait("the first acknowledgements", lambda: len(producer.acked) >= 100, 60)
        argv = [sys.executable, str(REPO / "ops" / "rolling_restart.py"), "--log-dir", str(tmp_path / "restarted")]
        argv += ["--timeout-s", str(WAIT_TIMEOUT_S)]
        for b in c.nodes.values():
            argv += ["--node", b.admin, _start_command(b)]
        tool = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=RESTART_TIMEOUT_S, check=False)
        print(tool.stdout)  # the steps with their times, shown with -s or on a failure
        assert tool.returncode == 0, f"{tool.stdout}\n{tool.stderr}"
        assert tool.stdout.count("controlled shutdown") == 3, tool.stdout
        acked_during_restart = len(producer.acked)
    finally:
        producer.stop_at.set()
        producer.join(360)
    assert not producer.is_alive()
    assert producer.delivery_errors == [], producer.delivery_errors[:10]
    assert len(producer.acked) == producer.sent, (len(producer.acked), producer.sent)
    assert acked_during_restart > 100, acked_during_restart  # the producer really wrote through the restart

    try:
        _wait("the consumer to read every acknowledged record", lambda: consumer.count >= producer.sent, 180)
        time.sleep(1)  # anything duplicated beyond the acknowledged records would arrive now
    finally:
        consumer.stop_at.set()
        consumer.join(30)
    expected: dict[int, list[tuple[int, bytes]]] = {p: [] for p in range(PARTITIONS)}
    for value, (partition, offset) in producer.acked.items():
        expected[partition].append((offset, value))
    for p in range(PARTITIONS):
        got = consumer.read[p]
        assert [o for o, _ in got] == sorted({o for o, _ in got}), f"partition {p}: offsets repeat or go back"
        assert got == sorted(expected[p]), f"partition {p}: read {len(got)}, acknowledged {len(expected[p])}"
        assert [v for _, v in got] == sorted(v for _, v in got), f"partition {p}: out of the order produced"

    for b in c.nodes.values():
        _wait(f"{b.admin} ready", lambda b=b: admin_call(b.admin, "GET", "/v1/status/ready")[0] == 200, 60)  # type: ignore[misc]
    brokers = c.nodes[1].admin_get("/v1/brokers")
    assert isinstance(brokers, list)
    assert [(x["broker_id"], x["status"]) for x in brokers] == [(0, "active"), (10, "active"), (20, "active")]
    health = _health(c.nodes[1])
    assert health["under_replicated_count"] == 0 and health["leaderless_count"] == 0, health
    leaders = sorted(p["leader"] for p in _partitions(c.nodes[1], topic_name))  # type: ignore[type-var]
    assert leaders == [0, 10, 20], leaders  # back on the preferred replicas


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) == 0


def test_a_controlled_shutdown_moves_leadership_away_before_the_node_stops(cluster3: Cluster, topic_name: str) -> None:
    """SIGTERM to the Raft leader's node, which leads partitions: its brokers lead nothing before its Kafka port
    closes, the Raft leadership is elsewhere, and once back the node ends the maintenance it started by itself."""
    c = cluster3
    _create_topic(c, topic_name)
    victim_id = c.leader()
    victim = c.nodes[victim_id]
    witness = next(b for n, b in c.nodes.items() if n != victim_id)
    victim_broker = (victim_id - 1) * 10
    _wait(
        "the victim to lead a partition",
        lambda: any(p["leader"] == victim_broker for p in _partitions(witness, topic_name)),
    )

    seen: list[tuple[bool, int]] = []  # (victim's Kafka port open, its leader count) observed from the witness
    done = threading.Event()

    def watch() -> None:
        deadline = time.monotonic() + 60
        while not done.is_set() and time.monotonic() < deadline:
            listed = witness.admin_get("/v1/brokers")
            assert isinstance(listed, list)
            leads = next(int(x["leader_partitions"]) for x in listed if x["broker_id"] == victim_broker)
            seen.append((_port_open(victim.port), leads))
            time.sleep(0.02)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    _wait("the watcher's first look", lambda: len(seen) > 0)
    try:
        assert victim.stop() == 0, victim.log()
    finally:
        done.set()
        watcher.join(70)
    closed_at = next(i for i, (open_, _) in enumerate([*seen, (False, -1)]) if not open_)
    assert closed_at > 0, seen[:5]
    assert any(leads == 0 for _, leads in seen[:closed_at]), f"still leading when the port closed: {seen[-20:]}"
    assert seen[0][1] > 0
    log = victim.log(200_000)
    drained = log.index("controlled shutdown in")
    assert "Raft leadership transferred" in log[drained : drained + 500], log[drained : drained + 500]
    assert drained < log.index("stopped", drained), "the shard stopped before the controlled shutdown ended"
    assert c.leader() != victim_id
    assert (victim.data_dir / "controlled-shutdown.json").exists()

    victim.start()
    _wait(
        "the victim out of maintenance",
        lambda: witness.admin_get(f"/v1/brokers/{victim_broker}")["status"] == "active",  # type: ignore[index]
        60,
    )
    _wait("the marker removed", lambda: not (victim.data_dir / "controlled-shutdown.json").exists())
