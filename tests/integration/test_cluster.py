"""Three real nodes on loopback sharing one Raft metadata quorum: metadata everywhere, leader failover, full restart,
membership changes while writes continue."""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from tests.conftest import Broker, free_port_range

pytestmark = pytest.mark.integration

ELECTION_TIMEOUT_MS = 1000


class Cluster:
    def __init__(self, root: Path, size: int = 3, spare: int = 1) -> None:
        base = free_port_range(size + spare)
        self.raft_ports = {i: base + i - 1 for i in range(1, size + spare + 1)}
        voters = ",".join(f"{i}@127.0.0.1:{self.raft_ports[i]}" for i in range(1, size + 1))
        self.nodes = {i: self._node(root, i, voters, spare=False) for i in range(1, size + 1)}
        self.spares = {i: self._node(root, i, voters, spare=True) for i in range(size + 1, size + spare + 1)}

    def _node(self, root: Path, i: int, voters: str, spare: bool) -> Broker:
        args = ["--node-id", str(i), "--controller-voters", voters, "--broker-id", str((i - 1) * 10)]
        args += ["--controller-secret", "s3cret", "--raft-election-timeout-ms", str(ELECTION_TIMEOUT_MS)]
        if spare:
            args += ["--controller-peers", f"{i}@127.0.0.1:{self.raft_ports[i]}"]
        else:
            spares = [f"{j}@127.0.0.1:{p}" for j, p in self.raft_ports.items() if j > len(voters.split(","))]
            args += ["--controller-peers", ",".join(spares)]
        return Broker(root / f"node{i}", args)

    def start(self) -> None:
        for b in self.nodes.values():
            b.launch()
        for b in self.nodes.values():
            b.wait_ready()

    def live(self) -> list[Broker]:
        return [b for b in self.nodes.values() if b.alive()]

    def controller(self, b: Broker) -> dict[str, object]:
        status = b.admin_get("/v1/controller")
        assert isinstance(status, dict)
        return status

    def leader(self, timeout_s: float = 15) -> int:
        """The node id every live node agrees leads the quorum."""
        deadline = time.monotonic() + timeout_s
        while True:
            seen = {self.controller(b)["leader"] for b in self.live()}
            if len(seen) == 1 and None not in seen:
                return int(str(seen.pop()))
            assert time.monotonic() < deadline, f"no agreed leader: {seen}"
            time.sleep(0.05)


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    c = Cluster(tmp_path)
    c.start()
    yield c
    for b in [*c.nodes.values(), *c.spares.values()]:
        if b.alive():
            assert b.stop() == 0, b.log()


def _create(bootstrap: str, name: str, partitions: int = 6, timeout_s: float = 30) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    futures = admin.create_topics([NewTopic(name, partitions, 1)], request_timeout=timeout_s)
    futures[name].result(timeout=timeout_s)


def _topic_partitions(bootstrap: str, name: str) -> int:
    md = AdminClient({"bootstrap.servers": bootstrap}).list_topics(timeout=10)
    t = md.topics.get(name)
    return 0 if t is None or t.error is not None else len(t.partitions)


def _wait_visible(cluster: Cluster, name: str, partitions: int) -> None:
    deadline = time.monotonic() + 20
    for b in cluster.live():
        while _topic_partitions(b.bootstrap, name) != partitions:
            assert time.monotonic() < deadline, f"{name} not visible on {b.bootstrap}"
            time.sleep(0.1)


def test_topic_created_on_one_node_is_served_by_every_node(cluster: Cluster, topic_name: str) -> None:
    first, second, third = cluster.nodes.values()
    _create(first.bootstrap, topic_name, partitions=6)
    _wait_visible(cluster, topic_name, 6)
    md = AdminClient({"bootstrap.servers": third.bootstrap}).list_topics(timeout=10)
    assert sorted(md.brokers) == [0, 10, 20]  # one shard per node, every node's broker registered
    leaders = {p.leader for p in md.topics[topic_name].partitions.values()}
    assert len(leaders) > 1  # partitions are placed across nodes
    producer = Producer({"bootstrap.servers": second.bootstrap, "acks": "all"})
    for i in range(60):
        producer.produce(topic_name, value=b"m%d" % i, partition=i % 6)
    assert producer.flush(30) == 0
    consumer = Consumer({"bootstrap.servers": first.bootstrap, "group.id": "unused", "enable.auto.commit": False})
    consumer.assign([TopicPartition(topic_name, p, 0) for p in range(6)])
    got = set()
    deadline = time.monotonic() + 30
    while len(got) < 60 and time.monotonic() < deadline:
        m = consumer.poll(0.5)
        if m is not None and m.error() is None:
            got.add(m.value())
    consumer.close()
    assert got == {b"m%d" % i for i in range(60)}


def test_leader_sigkill_elects_a_new_leader_and_writes_resume(cluster: Cluster, topic_name: str) -> None:
    old = cluster.leader()
    victim = cluster.nodes[old]
    victim.kill()
    killed_at = time.monotonic()
    survivor = next(b for b in cluster.live())
    _create(survivor.bootstrap, topic_name + "-after", partitions=1, timeout_s=30)
    elapsed = time.monotonic() - killed_at
    new = cluster.leader()
    assert new != old
    print(f"SIGKILL of leader {old} to first committed write on leader {new}: {elapsed:.2f} s")
    victim.start()  # it rejoins as a follower and catches up; pre-vote keeps it from disturbing the new leader
    _wait_visible(cluster, topic_name + "-after", 1)
    assert cluster.leader() == new


def test_sigkill_of_every_node_keeps_all_metadata(cluster: Cluster, topic_name: str) -> None:
    names = [f"{topic_name}-{i}" for i in range(5)]
    boot = cluster.nodes[1].bootstrap
    for i, name in enumerate(names):
        _create(boot, name, partitions=i + 1)
    for b in cluster.nodes.values():
        b.kill()
    cluster.start()
    for i, name in enumerate(names):
        _wait_visible(cluster, name, i + 1)


def test_add_a_fourth_voter_and_remove_one_while_writes_continue(cluster: Cluster, topic_name: str) -> None:
    spare = cluster.spares[4]
    spare.launch()  # not a voter: it becomes ready once the leader has added it and it has caught up
    leader = cluster.nodes[cluster.leader()]
    boot = cluster.nodes[1].bootstrap
    _create(boot, topic_name + "-0", partitions=1)
    req = urllib.request.Request(f"{leader.admin}/v1/controller/voters/4", method="POST")
    with urllib.request.urlopen(req, timeout=60) as r:
        assert json.loads(r.read())["voters"] == [1, 2, 3, 4]
    spare.wait_ready()
    _create(boot, topic_name + "-1", partitions=1)
    victim = next(n for n in (1, 2, 3) if n != cluster.leader())
    follower = cluster.nodes[1 if victim != 1 else 2]
    req = urllib.request.Request(f"{follower.admin}/v1/controller/voters/{victim}", method="DELETE")  # forwarded
    with urllib.request.urlopen(req, timeout=60) as r:
        assert victim not in json.loads(r.read())["voters"]
    _create(spare.bootstrap, topic_name + "-2", partitions=1)
    status = cluster.controller(spare)
    assert [v["id"] for v in status["voters"]] == sorted({1, 2, 3, 4} - {victim})  # type: ignore[union-attr]
    for name in (topic_name + "-0", topic_name + "-1", topic_name + "-2"):
        assert _topic_partitions(spare.bootstrap, name) == 1
