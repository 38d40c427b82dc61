"""bench.chaos.netns: real network partitions between nodes, each in its own network namespace on a bridge.

Shown with plain TCP servers (cut, heal, isolate, clean close) and with a real 3-node rafka_shards cluster whose
nodes listen on their namespace addresses (a node isolated from the others and from clients loses the quorum's
leadership to the other two and is back after healing).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from bench.chaos import netns
from bench.chaos.netns import Net

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(netns.available() is not None, reason=f"{netns.available()}"),
]

PORT = 7000
CONNECT_TIMEOUT_S = 1.5  # a cut link shows as this timeout; a working one connects in milliseconds
WAIT_S = 60.0

# A server that accepts (and closes) connections until it is killed; bounded by the count.
_SERVER = "import socket,sys\ns=socket.create_server((sys.argv[1],{port}))\nfor _ in range(1000): s.accept()[0].close()"
_CLIENT = (
    "import socket,sys\n"
    "try:\n"
    "    socket.create_connection((sys.argv[1], {port}), timeout={timeout}).close(); print('ok')\n"
    "except TimeoutError: print('timeout')\n"
    "except OSError as e: print('error', e)\n"
)


def _leftovers(run_id: str) -> list[str]:
    tag = netns._tag(run_id)
    namespaces = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout
    links = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True, check=True).stdout
    return [line for line in (namespaces + links).splitlines() if tag in line]


@pytest.fixture
def run_id() -> str:
    return f"test-{uuid.uuid4()}"


def _connect(net: Net, src: int | None, dst: int) -> str:
    """'ok', 'timeout' or 'error ...' for a TCP connect from node ``src`` (None: the root namespace) to ``dst``."""
    argv = [sys.executable, "-c", _CLIENT.format(port=PORT, timeout=CONNECT_TIMEOUT_S), net.node_address(dst)]
    if src is not None:
        argv = net.wrap(src, argv)
    return subprocess.run(argv, capture_output=True, text=True, timeout=30, check=True).stdout.strip()


def _wait_connect(net: Net, src: int | None, dst: int, want: str) -> None:
    deadline = time.monotonic() + WAIT_S
    got = _connect(net, src, dst)
    while got != want and time.monotonic() < deadline:
        time.sleep(0.1)
        got = _connect(net, src, dst)
    assert got == want, f"{src}->{dst}: {got}, wanted {want}"


def test_cut_heal_isolate_and_close_with_tcp_servers(run_id: str) -> None:
    with Net(3, run_id) as net:
        assert len({net.node_address(i) for i in range(3)} | {net.bridge_address()}) == 4
        servers = [
            subprocess.Popen(net.wrap(i, [sys.executable, "-c", _SERVER.format(port=PORT), net.node_address(i)]))
            for i in range(3)
        ]
        try:
            for src in (None, 0, 1, 2):
                for dst in range(3):
                    _wait_connect(net, src, dst, "ok")  # also waits for the servers to listen

            net.cut(0, 1)
            assert _connect(net, 0, 1) == "timeout"  # dropped, not refused: a partition is silence
            assert _connect(net, 1, 0) == "timeout"
            assert _connect(net, 0, 2) == "ok"
            assert _connect(net, 2, 1) == "ok"
            assert _connect(net, None, 0) == "ok"
            assert net.blocked(0) == [net.node_address(1)]

            net.heal(0, 1)
            assert _connect(net, 0, 1) == "ok"
            assert _connect(net, 1, 0) == "ok"

            net.isolate(2)
            assert _connect(net, None, 2) == "timeout"  # clients on the bridge are cut too
            assert _connect(net, 0, 2) == "timeout"
            assert _connect(net, 2, 1) == "timeout"
            assert _connect(net, 0, 1) == "ok"
            assert _connect(net, None, 1) == "ok"

            net.heal_all()
            for src in (None, 0, 1):
                assert _connect(net, src, 2) == "ok"
        finally:
            for p in servers:
                p.kill()
                p.wait(timeout=30)
    assert _leftovers(run_id) == []


def test_close_after_an_error_and_leftovers_of_a_crashed_run_are_removed(run_id: str) -> None:
    crashed = Net(2, run_id)  # never closed: as if its process had died
    assert _leftovers(run_id)
    with pytest.raises(RuntimeError), Net(2, run_id) as net:  # the same run id starts over cleanly
        assert _connect(net, None, 0) in ("error [Errno 111] Connection refused", "timeout")
        raise RuntimeError("a failing verifier step")
    assert _leftovers(run_id) == []
    crashed.close()  # everything is gone already: closing again is harmless
    assert _leftovers(run_id) == []


# ---- a real 3-node rafka_shards cluster inside the namespaces ---------------------------------------------------

KAFKA_PORT = 9092  # every node has its own namespace, so the same ports everywhere and no collision between runs
ADMIN_PORT = 9644
RAFT_PORT = 9193
_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class NsNode:
    def __init__(self, net: Net, i: int, root: Path) -> None:
        self.net, self.i = net, i
        self.addr = net.node_address(i)
        self.log_path = root / f"node{i}.log"
        voters = ",".join(f"{j + 1}@{net.node_address(j)}:{RAFT_PORT}" for j in range(net.nodes))
        argv = [sys.executable, "-m", "rafka_shards", "serve", "--data-dir", str(root / f"node{i}")]
        argv += ["--shards", "1", "--node-id", str(i + 1), "--broker-id", str(10 * i)]
        argv += ["--listen", f"{self.addr}:{KAFKA_PORT}", "--admin-listen", f"{self.addr}:{ADMIN_PORT}"]
        argv += ["--controller-voters", voters, "--raft-election-timeout-ms", "1000"]
        argv += ["--broker-session-timeout-ms", "3000", "--broker-heartbeat-interval-ms", "300"]
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                net.wrap(i, argv), stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )

    @property
    def bootstrap(self) -> str:
        return f"{self.addr}:{KAFKA_PORT}"

    def get(self, path: str, timeout_s: float = 2.0) -> Any:
        with _NO_PROXY.open(f"http://{self.addr}:{ADMIN_PORT}{path}", timeout=timeout_s) as r:
            return json.loads(r.read())

    def reachable(self) -> bool:
        try:
            self.get("/v1/controller")
        except (urllib.error.URLError, OSError):
            return False
        return True

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]

    def wait_ready(self) -> None:
        deadline = time.monotonic() + WAIT_S
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"node {self.i} exited:\n{self.log()}"
            try:
                with _NO_PROXY.open(f"http://{self.addr}:{ADMIN_PORT}/v1/status/ready", timeout=1) as r:
                    if r.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.1)
        raise AssertionError(f"node {self.i} not ready:\n{self.log()}")

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                return self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=30)
                raise
        return self.proc.returncode


@pytest.fixture
def ns_cluster(tmp_path: Path, run_id: str) -> Iterator[list[NsNode]]:
    with Net(3, run_id) as net:
        nodes = [NsNode(net, i, tmp_path) for i in range(3)]
        try:
            for n in nodes:
                n.wait_ready()
            yield nodes
        finally:
            codes = [n.stop() for n in nodes]
            assert codes == [0, 0, 0], "\n".join(n.log() for n in nodes)
    assert _leftovers(run_id) == []


def _agreed_leader(nodes: list[NsNode]) -> int | None:
    try:
        seen = {n.get("/v1/controller")["leader"] for n in nodes}
    except (urllib.error.URLError, OSError):
        return None
    return int(seen.pop()) if len(seen) == 1 and None not in seen else None


def _wait_for(what: str, check: Any) -> Any:
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        got = check()
        if got:
            return got
        time.sleep(0.2)
    raise AssertionError(f"not within {WAIT_S}s: {what}")


def _produce(bootstrap: str, topic: str, values: list[bytes]) -> None:
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all", "message.timeout.ms": 30000})
    errors: list[object] = []
    for v in values:
        producer.produce(topic, v, partition=0, on_delivery=lambda err, _msg: errors.append(err) if err else None)
    assert producer.flush(45) == 0
    assert errors == []


def _read_all(bootstrap: str, topic: str, count: int) -> list[bytes]:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"g-{uuid.uuid4()}", "enable.auto.commit": False})
    consumer.assign([TopicPartition(topic, 0, 0)])
    got: list[bytes] = []
    deadline = time.monotonic() + WAIT_S
    try:
        while len(got) < count and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is not None and msg.error() is None:
                got.append(msg.value())
    finally:
        consumer.close()
    return got


def test_a_3_node_cluster_in_namespaces_survives_isolating_a_node(ns_cluster: list[NsNode]) -> None:
    nodes = ns_cluster
    bootstrap = ",".join(n.bootstrap for n in nodes)
    leader = _wait_for("a leader every node agrees on", lambda: _agreed_leader(nodes))
    admin = AdminClient({"bootstrap.servers": bootstrap})  # kept alive: its futures die with it
    admin.create_topics([NewTopic("chaos", 1, 3)])["chaos"].result(30)
    md = admin.list_topics(timeout=10)
    # Every node advertises its namespace address, so clients outside reach each broker directly.
    assert sorted(b.host for b in md.brokers.values()) == sorted(n.addr for n in nodes)
    _produce(bootstrap, "chaos", [b"before-%d" % k for k in range(20)])

    victim = nodes[leader - 1]  # isolating the quorum leader forces an election among the other two
    others = [n for n in nodes if n is not victim]
    victim.net.isolate(victim.i)
    assert not victim.reachable()  # clients in the root namespace are cut off as well
    new_leader = _wait_for("the other two elect a new leader", lambda: _agreed_leader(others))
    assert new_leader != leader

    victim.net.heal_all()
    _wait_for("the isolated node rejoins the quorum", lambda: _agreed_leader(nodes))
    _produce(bootstrap, "chaos", [b"after-%d" % k for k in range(20)])
    for n in nodes:
        got = _read_all(n.bootstrap, "chaos", 40)
        assert got == [b"before-%d" % k for k in range(20)] + [b"after-%d" % k for k in range(20)]
