"""A node of 1, 2 and 4 shard processes under the supervisor: placement, the four clients, crashes, metrics."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.structs import TopicPartition as AioTopicPartition
from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
from kafka import TopicPartition as KpTopicPartition
from kio.schema.errors import ErrorCode
from prometheus_client.parser import text_string_to_metric_families

from rafka_shards.records.builder import Record, build_batch
from tests.conftest import STOP_TIMEOUT_S, Broker, running, wait_gone
from tests.integration.helpers import raw_produce

pytestmark = pytest.mark.integration
PARTITIONS = 8


@pytest.fixture(params=[1, 2, 4], ids=lambda n: f"{n}-shards")
def node(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Broker]:
    yield from running(Broker(tmp_path / "data", shards=request.param))


@pytest.fixture
def two_shards(tmp_path: Path) -> Iterator[Broker]:
    yield from running(Broker(tmp_path / "data", shards=2, extra_args=["--shard-restart-backoff-ms", "100"]))


def _create(bootstrap: str, topic: str, partitions: int = PARTITIONS) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})  # must outlive the futures
    for f in admin.create_topics([NewTopic(topic, partitions, 1)]).values():
        f.result(30)


def _leaders(bootstrap: str, topic: str) -> dict[int, int]:
    md = AdminClient({"bootstrap.servers": bootstrap}).list_topics(topic, timeout=10)
    return {p: meta.leader for p, meta in md.topics[topic].partitions.items()}


def _check(sent: list[tuple[int, bytes]], got: list[tuple[int, int, bytes]]) -> None:
    """Every partition holds exactly what was sent to it, in order, at dense offsets from 0."""
    expected: dict[int, list[bytes]] = defaultdict(list)
    for p, v in sent:
        expected[p].append(v)
    received: dict[int, list[tuple[int, bytes]]] = defaultdict(list)
    for p, o, v in got:
        received[p].append((o, v))
    assert set(received) == set(expected) == set(range(PARTITIONS))
    for p, values in expected.items():
        rows = sorted(received[p])
        assert [o for o, _ in rows] == list(range(len(values)))
        assert [v for _, v in rows] == values


def _sent(tag: str, n: int = 400) -> list[tuple[int, bytes]]:
    return [(i % PARTITIONS, f"{tag}-{i}".encode()) for i in range(n)]


def _confluent(bootstrap: str, topic: str) -> None:
    sent = _sent("confluent")
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all", "linger.ms": 2})
    for p, v in sent:
        producer.produce(topic, value=v, partition=p)
    assert producer.flush(30) == 0
    _check(sent, _read(bootstrap, topic, len(sent)))


def _read(bootstrap: str, topic: str, count: int, timeout_s: float = 30) -> list[tuple[int, int, bytes]]:
    """(partition, offset, value) of up to ``count`` messages from the start of every partition, with librdkafka."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "check", "enable.auto.commit": False})
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(PARTITIONS)])
    got: list[tuple[int, int, bytes]] = []
    deadline = time.monotonic() + timeout_s
    while len(got) < count and time.monotonic() < deadline:
        m = consumer.poll(0.5)
        if m is not None:
            assert m.error() is None, m.error()
            got.append((m.partition(), m.offset(), m.value()))
    consumer.close()
    return got


def _kafka_python(bootstrap: str, topic: str) -> None:
    sent = _sent("kafka-python")
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all")
    futures = [producer.send(topic, value=v, partition=p) for p, v in sent]
    producer.flush(30)
    for f in futures:
        f.get(timeout=30)
    producer.close()
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False)
    consumer.assign([KpTopicPartition(topic, p) for p in range(PARTITIONS)])
    consumer.seek_to_beginning()
    got: list[tuple[int, int, bytes]] = []
    deadline = time.monotonic() + 30
    while len(got) < len(sent) and time.monotonic() < deadline:
        for records in consumer.poll(timeout_ms=500).values():
            got.extend((r.partition, r.offset, r.value) for r in records)
    consumer.close()
    _check(sent, got)


async def _aiokafka_async(bootstrap: str, topic: str) -> None:
    sent = _sent("aiokafka")
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    futures = [await producer.send(topic, value=v, partition=p) for p, v in sent]
    await asyncio.gather(*futures)
    await producer.stop()
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    consumer.assign([AioTopicPartition(topic, p) for p in range(PARTITIONS)])
    await consumer.seek_to_beginning()
    got: list[tuple[int, int, bytes]] = []
    deadline = time.monotonic() + 30
    while len(got) < len(sent) and time.monotonic() < deadline:
        for records in (await consumer.getmany(timeout_ms=500)).values():
            got.extend((r.partition, r.offset, r.value) for r in records if r.value is not None)
    await consumer.stop()
    _check(sent, got)


def _kcat(bootstrap: str, topic: str) -> None:
    sent = _sent("kcat")
    for p in range(PARTITIONS):
        lines = "".join(v.decode() + "\n" for q, v in sent if q == p)
        proc = subprocess.run(
            ["kcat", "-b", bootstrap, "-P", "-t", topic, "-p", str(p), "-X", "acks=all"],
            input=lines,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert proc.returncode == 0, proc.stderr
    proc = subprocess.run(
        ["kcat", "-b", bootstrap, "-C", "-t", topic, "-o", "beginning", "-e", "-f", "%p|%o|%s\n"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    got = [(int(p), int(o), v.encode()) for p, o, v in (line.split("|") for line in proc.stdout.splitlines())]
    _check(sent, got)


def test_metadata_lists_every_shard_with_the_node_as_rack(node: Broker) -> None:
    admin = KafkaAdminClient(bootstrap_servers=node.bootstrap)
    try:
        brokers = admin.describe_cluster()["brokers"]
    finally:
        admin.close()
    assert sorted((b["broker_id"], b["port"]) for b in brokers) == [(i, node.port + i) for i in range(node.shards)]
    assert {b["rack"] for b in brokers} == {socket.gethostname()}
    # Every shard answers cluster-wide requests from the same metadata.
    for port in node.ports:
        md = AdminClient({"bootstrap.servers": f"127.0.0.1:{port}"}).list_topics(timeout=10)
        assert sorted(md.brokers) == list(range(node.shards))


def test_partitions_spread_over_all_shards_and_four_clients_use_them(node: Broker, topic_name: str) -> None:
    _create(node.bootstrap, topic_name)
    leaders = _leaders(node.bootstrap, topic_name)
    counts = Counter(leaders.values())
    assert set(counts) == set(range(node.shards))  # every shard leads some partitions
    assert max(counts.values()) - min(counts.values()) <= 1  # balanced
    # Each shard serves exactly the partitions it leads: its own directory, locked.
    for p, leader in leaders.items():
        assert (node.data_dir / "kafka" / f"{topic_name}-{p}" / ".lock").exists(), (p, leader)
    for name, run in (
        ("confluent", _confluent),
        ("kafka-python", _kafka_python),
        ("aiokafka", lambda b, t: asyncio.run(_aiokafka_async(b, t))),
        ("kcat", _kcat),
    ):
        if name == "kcat" and shutil.which("kcat") is None:
            continue
        topic = f"{topic_name}-{name}"
        _create(node.bootstrap, topic)
        run(node.bootstrap, topic)


def _metrics(node: Broker) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(f"{node.admin}/metrics", timeout=10) as r:
        text = r.read().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_metrics_count_what_was_produced(node: Broker, topic_name: str) -> None:
    _create(node.bootstrap, topic_name)
    producer = Producer({"bootstrap.servers": node.bootstrap, "acks": "all", "linger.ms": 5})
    per_partition = Counter()
    for i in range(1000):
        p = (i * 7) % PARTITIONS
        per_partition[p] += 1
        producer.produce(topic_name, value=b"x" * (i % 50), partition=p)
    assert producer.flush(30) == 0
    assert len(_read(node.bootstrap, topic_name, 1000)) == 1000
    m = _metrics(node)
    for p in range(PARTITIONS):
        labels = (("partition", str(p)), ("topic", topic_name))
        assert m[("rafka_partition_records_in_total", labels)] == per_partition[p]
        assert m[("rafka_partition_log_end_offset", labels)] == per_partition[p]
        assert m[("rafka_partition_bytes_in_total", labels)] == m[("rafka_partition_size_bytes", labels)]
        assert m[("rafka_partition_bytes_out_total", labels)] == m[("rafka_partition_bytes_in_total", labels)]
        assert m[("rafka_partition_batches_out_total", labels)] == m[("rafka_partition_batches_in_total", labels)]
    assert m[("rafka_requests_total", (("api", "produce"),))] >= 1
    assert (
        m[("rafka_request_latency_seconds_count", (("api", "produce"),))]
        == m[("rafka_requests_total", (("api", "produce"),))]
    )
    assert m[("rafka_fsync_duration_seconds_count", ())] >= 1
    for shard in range(node.shards):
        assert m[("rafka_shard_up", (("shard", str(shard)),))] == 1
        assert m[("rafka_shard_restarts_total", (("shard", str(shard)),))] == 0
        assert m[("rafka_shard_cpu_seconds_total", (("shard", str(shard)),))] > 0
        assert m[("rafka_shard_resident_memory_bytes", (("shard", str(shard)),))] > 10_000_000


def test_sigterm_stops_every_process_cleanly(node: Broker) -> None:
    tree = node.process_tree()
    shard_pids = node.shard_pids()
    assert {p.pid for p in tree} >= set(shard_pids)
    assert node.stop() == 0  # the fixture helper also fails if any process outlives the supervisor
    assert wait_gone(tree, timeout_s=0) == []
    for i in range(node.shards):
        assert f"broker {i} stopped" in node.log()


def _stopped_cleanly(node: Broker, tree: list[psutil.Process]) -> str:
    """The node's supervisor exited 0 with every process gone and no error logged; its log."""
    assert node.proc is not None
    assert node.proc.wait(STOP_TIMEOUT_S) == 0, node.log()
    assert wait_gone(tree, timeout_s=STOP_TIMEOUT_S) == []
    text = node.log(1_000_000)
    for bad in ("ERROR", "CRITICAL", "died", "restarting"):
        assert bad not in text, text
    return text


def test_sigterm_to_the_process_group_stops_the_node_with_exit_0(node: Broker) -> None:
    """What systemd's KillMode=control-group and a terminal's job control do: every process gets SIGTERM at once,
    and the supervisor may see a child's exit before its own signal. A stop, not a crash: exit 0, nothing restarted."""
    _create(node.bootstrap, "before-group-term", partitions=2)
    tree = node.process_tree()
    node.signal_all(signal.SIGTERM)
    _stopped_cleanly(node, tree)


@pytest.mark.parametrize("child", ["controller", "shard"])
def test_sigterm_to_one_child_stops_the_node_cleanly_and_loses_nothing(
    tmp_path: Path, topic_name: str, child: str
) -> None:
    """The branch the process-group race takes, made certain: the child's clean exit arrives and the supervisor
    got no signal. The node stops (a restart would undo an operator's stop) and serves its data again when started."""
    broker = Broker(tmp_path / "data", shards=2)
    gen = running(broker)
    next(gen)
    try:
        _create(broker.bootstrap, topic_name, partitions=PARTITIONS)
        sent = _sent("term-child")
        producer = Producer({"bootstrap.servers": broker.bootstrap, "acks": "all"})
        for p, v in sent:
            producer.produce(topic_name, v, partition=p)
        assert producer.flush(60) == 0
        tree = broker.process_tree()
        pid = broker.controller_pid() if child == "controller" else broker.shard_pids()[1]
        os.kill(pid, signal.SIGTERM)
        text = _stopped_cleanly(broker, tree)
        assert "stopped on SIGTERM" in text and "stopping the node" in text
        broker.start()
        _check(sent, _read(broker.bootstrap, topic_name, len(sent)))
    finally:
        gen.close()
        if broker.alive():
            assert broker.stop() == 0, broker.log()


def test_ps_tells_the_processes_of_a_node_apart(two_shards: Broker) -> None:
    """Each process is named (setproctitle), not ``python -B -c from multiprocessing.spawn import ...``."""
    assert two_shards.proc is not None
    titles = {p.pid: " ".join(p.cmdline()).strip() for p in two_shards.process_tree()}
    supervisor = titles[two_shards.proc.pid]
    assert supervisor.startswith(f"rafka_shards: node 1 supervisor (Kafka {two_shards.bootstrap}, admin 127.0.0.1:")
    assert str(two_shards.data_dir) in supervisor
    assert titles[two_shards.controller_pid()].startswith("rafka_shards: node 1 controller (admin 127.0.0.1:")
    port = int(two_shards.bootstrap.rsplit(":", 1)[1])
    for i, pid in enumerate(two_shards.shard_pids()):
        assert titles[pid] == f"rafka_shards: node 1 shard {i} (broker {i}) 127.0.0.1:{port + i}"


def test_sigusr1_and_sigusr2_write_stacks_and_tasks_to_the_log_and_the_node_keeps_serving(two_shards: Broker) -> None:
    pids = [*two_shards.shard_pids(), two_shards.controller_pid()]
    for pid in pids:
        os.kill(pid, signal.SIGUSR1)
        os.kill(pid, signal.SIGUSR2)

    def dumped() -> bool:
        text = two_shards.log(1_000_000)
        return all(text.count(marker) >= len(pids) for marker in ("Current thread", "asyncio tasks of process"))

    deadline = time.monotonic() + 60
    while not dumped() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert dumped(), two_shards.log()
    text = two_shards.log(1_000_000)
    assert "event_loop.py" in text  # the thread stacks, with file and function
    assert "shard.py" in text and "wait_stopped" in text  # a shard's main task, suspended where it awaits its stop
    assert two_shards.shard_pids() == pids[:-1]  # nobody died or was restarted
    assert two_shards.controller_pid() == pids[-1]
    _create(two_shards.bootstrap, "after-sigusr1", partitions=2)


def test_shards_and_the_controller_stop_when_the_supervisor_is_killed(two_shards: Broker) -> None:
    children = [psutil.Process(pid) for pid in [*two_shards.shard_pids(), two_shards.controller_pid()]]
    assert two_shards.proc is not None
    os.kill(two_shards.proc.pid, signal.SIGKILL)
    two_shards.proc.wait()
    assert wait_gone(children, timeout_s=15) == [], "children outlived their supervisor"


def _acks_all_stream(node: Broker, topic: str, total: int, kill_pid: Callable[[], int]) -> tuple[list[Any], int]:
    """An idempotent acks=all stream of ``total`` messages, 400 in flight, over every partition; SIGKILL of
    ``kill_pid()`` once 1500 are acknowledged. Every message must be acknowledged without a client error: returns the
    (partition, offset, value) acknowledged and how many were sent when the kill came."""
    producer = Producer(
        {
            "bootstrap.servers": node.bootstrap,
            "acks": "all",
            "enable.idempotence": True,
            "linger.ms": 2,
            "message.timeout.ms": 60000,
        }
    )
    acked: list[tuple[int, int, bytes]] = []
    errors: list[object] = []

    def on_delivery(err: Any, msg: Any) -> None:
        if err is None:
            acked.append((msg.partition(), msg.offset(), msg.value()))
        else:
            errors.append(err)

    killed_at = -1
    deadline = time.monotonic() + 90
    i = 0
    while i < total and time.monotonic() < deadline:
        if i - len(acked) - len(errors) >= 400:  # keep a stream in flight, not everything queued at once
            producer.poll(0.01)
            continue
        producer.produce(topic, value=b"m%d" % i, partition=i % PARTITIONS, on_delivery=on_delivery)
        i += 1
        producer.poll(0)
        if killed_at < 0 and len(acked) >= 1500:
            os.kill(kill_pid(), signal.SIGKILL)
            killed_at = i
    assert producer.flush(90) == 0
    assert killed_at > 0, "the stream ended before the kill"
    assert errors == []  # the idempotent producer recovered by itself: every message was acknowledged
    assert len(acked) == total
    return acked, killed_at


def _check_acked_read_back(node: Broker, topic: str, acked: list[tuple[int, int, bytes]]) -> None:
    """Every acknowledged message is in the log once, where it was acknowledged, in the order sent."""
    got: dict[int, list[tuple[int, bytes]]] = defaultdict(list)
    for p, o, v in _read(node.bootstrap, topic, len(acked), timeout_s=60):
        got[p].append((o, v))
    for records in got.values():
        assert [o for o, _ in records] == list(range(len(records)))
        values = [int(v[1:]) for _, v in records]
        assert values == sorted(values) and len(set(values)) == len(values)  # once each, in order
    stored = {(p, o): v for p, records in got.items() for o, v in records}
    for p, o, v in acked:
        assert stored.get((p, o)) == v, f"acknowledged {v!r} at {p}/{o} is missing"


def test_sigkill_of_one_shard_during_acks_all_stream_loses_nothing(two_shards: Broker, topic_name: str) -> None:
    node = two_shards
    _create(node.bootstrap, topic_name)
    victim_broker = 1
    victim_partitions = {p for p, leader in _leaders(node.bootstrap, topic_name).items() if leader == victim_broker}
    old_pid = node.shard_pids()[victim_broker]
    acked, killed_at = _acks_all_stream(node, topic_name, 6000, lambda: old_pid)

    shards = node.admin_get("/v1/shards")
    assert isinstance(shards, list)
    victim = shards[victim_broker]
    assert victim["restarts"] == 1 and victim["pid"] != old_pid and victim["ready"]
    assert victim["last_exit"] == "killed by SIGKILL"
    after_kill = [v for p, _, v in acked if p in victim_partitions and int(v[1:]) > killed_at]
    assert after_kill, "nothing sent after the kill reached the restarted shard's partitions"
    _check_acked_read_back(node, topic_name, acked)
    m = _metrics(node)
    assert m[("rafka_shard_restarts_total", (("shard", str(victim_broker)),))] == 1


def test_sigkill_of_the_controller_process_leaves_the_shards_serving(two_shards: Broker, topic_name: str) -> None:
    """The controller is its own process under the supervisor: killed mid-stream, it is restarted, the shards are
    not (same pids, no client error), and they follow the new controller process's metadata."""
    node = two_shards
    assert node.proc is not None
    _create(node.bootstrap, topic_name)
    old_controller, shard_pids = node.controller_pid(), node.shard_pids()
    assert old_controller not in shard_pids
    assert psutil.Process(old_controller).ppid() == node.proc.pid
    acked, _ = _acks_all_stream(node, topic_name, 6000, lambda: old_controller)

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            shards = node.admin_get("/v1/shards")
            assert isinstance(shards, list)
            if all(s["ready"] for s in shards):
                break
        time.sleep(0.1)
    status = node.admin_get("/v1/controller")
    assert isinstance(status, dict)
    assert status["process"]["restarts"] == 1 and status["process"]["pid"] != old_controller
    assert [s["pid"] for s in shards] == shard_pids and [s["restarts"] for s in shards] == [0, 0]
    assert all(s["ready"] and s["metadata_lag"] == 0 for s in shards), shards
    assert f"controller (pid {old_controller}) died: killed by SIGKILL" in node.log()
    # Metadata flows again, through Kafka and through the admin API: new topics are served by both shards.
    _create(node.bootstrap, topic_name + "-after")
    producer = Producer({"bootstrap.servers": node.bootstrap, "acks": "all"})
    for p in range(PARTITIONS):
        producer.produce(topic_name + "-after", value=b"m%d" % p, partition=p)
    assert producer.flush(30) == 0
    assert sorted(v for _, _, v in _read(node.bootstrap, topic_name + "-after", PARTITIONS)) == sorted(
        b"m%d" % p for p in range(PARTITIONS)
    )
    _check_acked_read_back(node, topic_name, acked)
    assert _metrics(node)[("rafka_controller_restarts_total", ())] == 1


def test_a_shard_refuses_partitions_it_does_not_own(two_shards: Broker, topic_name: str) -> None:
    _create(two_shards.bootstrap, topic_name, partitions=2)
    partition = next(p for p, leader in _leaders(two_shards.bootstrap, topic_name).items() if leader == 1)
    batch = bytes(build_batch([Record(b"k", b"v", 0)]))
    wrong = raw_produce(two_shards.ports[0], topic_name, batch, partition=partition)
    assert wrong.error_code == ErrorCode.not_leader_or_follower
    right = raw_produce(two_shards.ports[1], topic_name, batch, partition=partition)
    assert right.error_code == ErrorCode.none and right.base_offset == 0


@pytest.mark.parametrize("victim", ["shard", "controller"])
def test_restarts_beyond_the_cap_stop_the_node(tmp_path: Path, victim: str) -> None:
    node = Broker(
        tmp_path / "data", shards=2, extra_args=["--shard-restarts-max", "1", "--shard-restart-backoff-ms", "0"]
    )
    node.start()
    tree = node.process_tree()

    def victim_pid() -> int:
        return node.shard_pids()[1] if victim == "shard" else node.controller_pid()

    def restarted_once() -> bool:
        if victim == "controller":
            status = node.admin_get("/v1/controller")
            return isinstance(status, dict) and status["process"]["restarts"] == 1
        shards = node.admin_get("/v1/shards")
        return isinstance(shards, list) and shards[1]["restarts"] == 1 and shards[1]["ready"]

    os.kill(victim_pid(), signal.SIGKILL)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError):  # the admin API is down while the controller process restarts
            if restarted_once():
                break
        time.sleep(0.1)
    os.kill(victim_pid(), signal.SIGKILL)
    assert node.proc is not None
    assert node.proc.wait(30) == 1
    assert f"{victim if victim == 'controller' else 'shard 1'} died 2 times within" in node.log()
    assert wait_gone(tree, timeout_s=10) == []


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--shards", "0"], "shards: expected auto or a number of shards"),
        (["--shards", "two"], "shards: expected auto or a number of shards"),
        (["--shards", "4", "--listen", "127.0.0.1:65534"], "beyond 65535"),
    ],
)
def test_bad_shard_settings_are_usage_errors(tmp_path: Path, args: list[str], message: str) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "rafka_shards", "serve", "--data-dir", str(tmp_path), "--admin-listen", "", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2 and message in proc.stderr, proc.stderr


def test_a_taken_port_of_any_shard_fails_fast_naming_it(tmp_path: Path) -> None:
    node = Broker(tmp_path / "data", shards=3)
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", node.port + 2))
        blocker.listen()
        with pytest.raises(RuntimeError, match=f"port {node.port + 2} is already in use"):
            node.start()
    assert node.proc is not None and node.proc.returncode == 2


@pytest.fixture
def slow_restart(tmp_path: Path) -> Iterator[Broker]:
    # A restart delay long enough that a killed shard is still down when a test connects, whatever the load.
    args = ["--shard-restart-backoff-ms", "20000", "--shard-restart-backoff-max-ms", "20000"]
    yield from running(Broker(tmp_path / "data", shards=2, extra_args=args))


def test_a_dead_shards_port_resets_connections_until_its_next_process_is_ready(slow_restart: Broker) -> None:
    """While a shard is down the supervisor resets connections to its port at once (a client goes to the other
    brokers, as from a dead Kafka broker) instead of leaving them in the accept backlog until the restart; the
    restarted shard serves the port again."""
    from kio.schema.api_versions.v0.request import ApiVersionsRequest

    from tests.integration.helpers import kafka_request, recv_frame

    node = slow_restart
    port = node.ports[1]
    victim = psutil.Process(node.shard_pids()[1])
    victim.send_signal(signal.SIGKILL)
    victim.wait(30)

    def down() -> bool:
        shards = node.admin_get("/v1/shards")
        assert isinstance(shards, list)
        return not shards[1]["ready"]

    deadline = time.monotonic() + 30
    while not down():
        assert time.monotonic() < deadline, "the supervisor did not see the shard die"
        time.sleep(0.05)
    try:  # the reset may come back before connect() returns, or on the first read
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            s.settimeout(10)  # before the change: no answer and no reset until the restart, 20 s later
            s.sendall(kafka_request(18, 0, ApiVersionsRequest()))
            got = s.recv(4)
    except (ConnectionResetError, BrokenPipeError):
        got = b""
    assert got == b"", got
    node.wait_ready()  # the restarted shard: every shard listening and ready
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        s.sendall(kafka_request(18, 0, ApiVersionsRequest()))
        assert len(recv_frame(s)) > 8
