"""Three real nodes on loopback sharing one Raft metadata quorum: metadata everywhere, leader failover, full restart,
membership changes while writes continue."""

from __future__ import annotations

import collections
import contextlib
import json
import os
import signal
import socket
import struct
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic
from kio.schema.errors import ErrorCode

from rafka_shards.controller_node.raft_transport import KIND_FORWARD, KIND_RAFT, encode_frame
from rafka_shards.records.builder import Record, build_batch
from tests.conftest import Broker, free_port_range, stop_all, wait_gone
from tests.integration.helpers import admin_call, raw_produce

pytestmark = pytest.mark.integration

ELECTION_TIMEOUT_MS = 1000
SESSION_TIMEOUT_MS = 2000  # broker lease: short, so the fencing test waits seconds, not the default 6


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
        args += ["--broker-session-timeout-ms", str(SESSION_TIMEOUT_MS), "--broker-heartbeat-interval-ms", "200"]
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
    stop_all([*c.nodes.values(), *c.spares.values()])


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


def test_topic_created_through_a_followers_admin_api_is_served_by_every_node(cluster: Cluster, topic_name: str) -> None:
    first, second, third = cluster.nodes.values()
    follower = next(b for n, b in cluster.nodes.items() if n != cluster.leader())
    body = {"name": topic_name, "partitions": 6, "configs": {"retention.ms": "86400000"}}
    assert admin_call(follower.admin, "POST", "/v1/topics", body)[0] == 201  # forwarded to the leader
    _wait_visible(cluster, topic_name, 6)
    md = AdminClient({"bootstrap.servers": third.bootstrap}).list_topics(timeout=10)
    assert sorted(md.brokers) == [0, 10, 20]  # one shard per node, every node's broker registered
    leaders = {p.leader for p in md.topics[topic_name].partitions.values()}
    assert len(leaders) > 1  # partitions are placed across nodes
    producer = Producer({"bootstrap.servers": second.bootstrap, "acks": "all"})
    for i in range(60):
        producer.produce(topic_name, value=b"m%d" % i, partition=i % 6)
    assert producer.flush(30) == 0
    got = _read_all(first.bootstrap, topic_name, 6, 60)
    assert set(got) == {b"m%d" % i for i in range(60)}


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
        # The client may ask any node's broker for metadata: wait for the one it asks to have applied the record.
        _wait(f"{name} visible", lambda n=name: _topic_partitions(spare.bootstrap, n) == 1)  # type: ignore[misc]


def _partitions(b: Broker, name: str) -> list[dict[str, object]]:
    topic = b.admin_get(f"/v1/topics/{name}")
    assert isinstance(topic, dict)
    parts = topic["partitions"]
    assert isinstance(parts, list)
    return parts


def _broker_status(b: Broker, broker_id: int) -> str:
    listed = b.admin_get("/v1/brokers")
    assert isinstance(listed, list)
    return str(next(x["status"] for x in listed if x["broker_id"] == broker_id))


def _wait(what: str, check: Callable[[], bool], timeout_s: float = 30) -> float:
    """Seconds until ``check()`` holds."""
    start = time.monotonic()
    while not check():
        assert time.monotonic() - start < timeout_s, f"timed out waiting for {what}"
        time.sleep(0.1)
    return time.monotonic() - start


def _produce(bootstrap: str, topic: str, values: dict[int, list[bytes]]) -> None:
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all", "message.timeout.ms": 30000})
    for partition, items in values.items():
        for v in items:
            producer.produce(topic, value=v, partition=partition)
    assert producer.flush(40) == 0


def _read_all(bootstrap: str, topic: str, partitions: int, expect: int) -> list[bytes]:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "unused", "enable.auto.commit": False})
    consumer.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
    got: list[bytes] = []
    deadline = time.monotonic() + 30
    while len(got) < expect and time.monotonic() < deadline:
        m = consumer.poll(0.5)
        if m is not None and m.error() is None:
            got.append(m.value())
    consumer.close()
    return got


def _read_to_end(bootstrap: str, topic: str, partitions: int) -> list[bytes]:
    """Every record up to each partition's high watermark now (duplicates included: retries without idempotence)."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "unused", "enable.auto.commit": False})
    ends = {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in range(partitions)}
    consumer.assign([TopicPartition(topic, p, 0) for p in range(partitions) if ends[p] > 0])
    got: list[bytes] = []
    reached = {p for p, end in ends.items() if end == 0}
    deadline = time.monotonic() + 30
    while len(reached) < partitions and time.monotonic() < deadline:
        m = consumer.poll(0.5)
        if m is not None and m.error() is None:
            got.append(m.value())
            if m.offset() + 1 >= ends[m.partition()]:
                reached.add(m.partition())
    consumer.close()
    return got


def test_a_node_cut_off_longer_than_its_lease_is_fenced_and_rejoins_without_split_brain(
    cluster: Cluster, topic_name: str
) -> None:
    leader = cluster.leader()
    victim_node = next(n for n in (1, 2, 3) if n != leader)  # a Raft follower: the quorum keeps its leader
    victim, watcher = cluster.nodes[victim_node], cluster.nodes[leader]
    victim_broker = (victim_node - 1) * 10
    _create(watcher.bootstrap, topic_name, partitions=6)
    _wait_visible(cluster, topic_name, 6)
    before = {int(str(p["partition"])): p for p in _partitions(watcher, topic_name)}
    on_victim = [i for i, p in before.items() if p["leader"] == victim_broker]
    assert on_victim, before  # placement spreads 6 partitions over 3 brokers
    first = {i: [b"before-%d-%d" % (i, n) for n in range(10)] for i in range(6)}
    _produce(watcher.bootstrap, topic_name, first)

    victim.signal_all(signal.SIGSTOP)
    stopped_at = time.monotonic()
    try:
        fenced_after = _wait(
            "the stopped broker to be fenced", lambda: _broker_status(watcher, victim_broker) == "fenced"
        )
        now = {int(str(p["partition"])): p for p in _partitions(watcher, topic_name)}
        for i in on_victim:
            # Replication factor 1: no other replica has the data, so the partition is leaderless, with a new epoch.
            assert now[i]["leader"] == -1 and now[i]["isr"] == [victim_broker], now[i]
            assert int(str(now[i]["leader_epoch"])) == int(str(before[i]["leader_epoch"])) + 1
        md = AdminClient({"bootstrap.servers": watcher.bootstrap}).list_topics(timeout=10)
        assert victim_broker not in md.brokers  # fenced brokers are not offered to clients
        others = {i: [b"during-%d" % i] for i in range(6) if i not in on_victim}
        _produce(watcher.bootstrap, topic_name, others)  # the rest of the cluster keeps taking writes
    finally:
        victim.signal_all(signal.SIGCONT)
    print(f"broker {victim_broker} fenced {fenced_after:.2f} s after SIGSTOP (session timeout {SESSION_TIMEOUT_MS} ms)")

    def led_again() -> bool:
        parts = _partitions(watcher, topic_name)
        return all(parts[i]["leader"] == victim_broker for i in on_victim)

    back_after = _wait("the resumed broker to lead its partitions again", led_again)
    total_s = time.monotonic() - stopped_at
    print(f"broker {victim_broker} leads again {back_after:.2f} s after SIGCONT ({total_s:.1f} s after SIGSTOP)")
    assert _broker_status(watcher, victim_broker) == "active"
    for p in _partitions(watcher, topic_name):
        i = int(str(p["partition"]))
        expected_epoch = int(str(before[i]["leader_epoch"])) + (2 if i in on_victim else 0)
        assert p["leader_epoch"] == expected_epoch, p
    after = {i: [b"after-%d" % i] for i in range(6)}
    _produce(victim.bootstrap, topic_name, after)
    total = 60 + len(others) + 6
    got = _read_all(victim.bootstrap, topic_name, 6, total)
    assert sorted(got) == sorted([v for d in (first, others, after) for vs in d.values() for v in vs])


def test_a_shard_whose_lease_lapsed_refuses_writes_its_stale_image_says_it_leads(
    cluster: Cluster, topic_name: str
) -> None:
    """Only the node's controller process is stopped: the shard runs on with an image that says it leads, but its
    heartbeats go unanswered, so once its lease lapses it refuses produce itself, before the controller fences it."""
    leader = cluster.leader()
    victim_node = next(n for n in (1, 2, 3) if n != leader)
    victim, watcher = cluster.nodes[victim_node], cluster.nodes[leader]
    victim_broker = (victim_node - 1) * 10
    _create(watcher.bootstrap, topic_name, partitions=6)
    _wait_visible(cluster, topic_name, 6)
    mine = next(int(str(p["partition"])) for p in _partitions(watcher, topic_name) if p["leader"] == victim_broker)
    controller_pid = victim.controller_pid()
    os.kill(controller_pid, signal.SIGSTOP)
    try:
        time.sleep(SESSION_TIMEOUT_MS / 1000 + 0.5)
        port = victim.ports[0]
        r = raw_produce(port, topic_name, build_batch([Record(b"k", b"stale", 1)]), partition=mine)
        assert r.error_code == ErrorCode.not_leader_or_follower, r
        assert "lease" in str(r.error_message), r
    finally:
        os.kill(controller_pid, signal.SIGCONT)
    parts = _partitions(watcher, topic_name)
    _wait("the broker to lead again", lambda: _partitions(watcher, topic_name)[mine]["leader"] == victim_broker)
    _produce(watcher.bootstrap, topic_name, {mine: [b"fresh"]})
    assert _read_all(victim.bootstrap, topic_name, 6, 1) == [b"fresh"], parts


def test_hostile_controller_frames_are_dropped_and_counted_without_disturbing_the_quorum(
    cluster: Cluster, topic_name: str
) -> None:
    """What anyone who can reach a Raft port may send: a wrong secret, a node id nobody configured, a frame kind or
    message version from the future, garbage, an absurd length. Each is dropped and counted; the quorum goes on."""
    target = cluster.nodes[1]
    before = cluster.controller(target)
    leader, term = cluster.leader(), before["term"]
    secret = b"s3cret"
    future_version = struct.pack(">BBIIQ", 9, 1, 2, 1, int(str(term)) + 5)  # a "vote request" of version 9
    sends = [
        ("bad_secret", encode_frame(b"guess", KIND_RAFT, 2, future_version)),
        ("unknown_node", encode_frame(secret, KIND_RAFT, 99, future_version)),
        ("unknown_kind", encode_frame(secret, 77, 2, b"{}")),
        ("malformed", encode_frame(secret, KIND_RAFT, 2, future_version)),
        ("malformed", encode_frame(secret, KIND_RAFT, 2, b"\x01")),
        ("malformed", encode_frame(secret, KIND_FORWARD, 2, b"not json")),
        ("bad_frame", struct.pack(">I", 2**31) + b"x" * 64),
    ]
    expected: collections.Counter[str] = collections.Counter()
    for reason, frame in sends:
        expected[reason] += 1
        with socket.create_connection(("127.0.0.1", cluster.raft_ports[1]), timeout=5) as s:
            s.sendall(frame)
            s.shutdown(socket.SHUT_WR)
            s.settimeout(5)
            with contextlib.suppress(OSError):
                while s.recv(4096):  # until the node closes its end: the frame has been judged
                    pass

        def counted(r: str = reason) -> bool:
            dropped = cluster.controller(target)["transport_dropped"]
            assert isinstance(dropped, dict)
            return int(dropped.get(r, 0)) >= expected[r]

        _wait(f"{reason} counted", counted)
    after = cluster.controller(target)
    assert after["transport_dropped"] == dict(expected)
    assert after["term"] == term and cluster.leader() == leader  # the "vote request" from the future did nothing
    _create(target.bootstrap, topic_name, partitions=1)
    _wait_visible(cluster, topic_name, 1)


def test_partition_leadership_and_replicas_change_without_losing_data(cluster: Cluster, topic_name: str) -> None:
    """Leadership moves only to an in-sync replica; a reassignment adds the new replicas, which copy the log and join
    the ISR, before the old ones leave; the replication factor goes up and down; every acknowledged record is still
    there at the end."""
    node = cluster.nodes[2]
    part = f"/v1/partitions/{topic_name}/0"
    body = {"name": topic_name, "partitions": 1, "replication_factor": 2}
    status, _ = admin_call(node.admin, "POST", "/v1/topics", body)
    assert status == 201
    status, p = admin_call(node.admin, "GET", part)
    leader, replicas = p["leader"], p["replicas"]
    assert isinstance(replicas, list) and sorted(p["isr"]) == sorted(replicas) and len(replicas) == 2  # type: ignore[type-var]
    first = [b"first-%d" % n for n in range(10)]
    _produce(node.bootstrap, topic_name, {0: first})
    follower = next(r for r in replicas if r != leader)
    third = next(b for b in (0, 10, 20) if b not in replicas)
    status, refused = admin_call(node.admin, "POST", f"{part}/transfer_leadership", {"target": third})
    assert status == 400 and refused["field"] == "target", refused  # not a replica at all
    status, moved = admin_call(node.admin, "POST", f"{part}/transfer_leadership", {"target": follower})
    assert status == 200 and moved["leader"] == follower and moved["leader_epoch"] == 1, moved
    status, moved = admin_call(node.admin, "POST", f"{part}/replicas", {"replicas": [follower, third]})
    assert status == 200 and moved["adding_replicas"] == [third] and moved["removing_replicas"] == [leader], moved
    assert moved["replicas"] == [follower, third, leader]  # the old replica stays until the new one caught up
    status, refused = admin_call(node.admin, "POST", f"{part}/replicas", {"replicas": [third]})
    assert status == 409 and "in progress" in str(refused["message"]), refused

    def isr_is(expected: list[int]) -> bool:
        p = admin_call(node.admin, "GET", part)[1]
        return sorted(p["replicas"]) == sorted(p["isr"]) == sorted(expected)  # type: ignore[type-var]

    _wait("the new replica to catch up, and the old one to leave", lambda: isr_is([follower, third]))
    status, topic = admin_call(cluster.nodes[3].admin, "PATCH", f"/v1/topics/{topic_name}", {"replication_factor": 3})
    assert status == 200, topic
    _wait("the third replica to join the ISR", lambda: isr_is([0, 10, 20]))
    status, topic = admin_call(cluster.nodes[1].admin, "PATCH", f"/v1/topics/{topic_name}", {"replication_factor": 1})
    assert status == 200 and topic["replication_factor"] == 1, topic
    status, p = admin_call(node.admin, "GET", part)
    assert p["replicas"] == [follower] and p["leader"] == follower and p["isr"] == [follower], p
    _produce(node.bootstrap, topic_name, {0: [b"still here"]})
    elsewhere = next(b for n, b in cluster.nodes.items() if (n - 1) * 10 != follower)
    status, p = admin_call(elsewhere.admin, "GET", part)  # asked of the leader by ListOffsets
    offsets = p["offsets"]
    assert isinstance(offsets, dict) and offsets["high_watermark"] == 11, p
    assert sorted(_read_all(elsewhere.bootstrap, topic_name, 1, 11)) == sorted([*first, b"still here"])


def _isr_full(b: Broker, name: str) -> bool:
    return all(sorted(p["isr"]) == sorted(p["replicas"]) for p in _partitions(b, name))  # type: ignore[type-var]


def test_replicated_partitions_fail_over_to_an_in_sync_replica_and_the_old_leader_catches_up(
    cluster: Cluster, topic_name: str
) -> None:
    """Replication factor 3: acks=all is answered once every in-sync replica has the batch; a node cut off
    (SIGSTOP) is fenced and its partitions get new leaders from their ISR with every acknowledged record; resumed,
    it follows, truncates what it wrote alone, catches up, rejoins the ISR, and can lead again with all the data."""
    leader = cluster.leader()
    victim_node = next(n for n in (1, 2, 3) if n != leader)  # a Raft follower: the quorum keeps its leader
    victim, watcher = cluster.nodes[victim_node], cluster.nodes[leader]
    victim_broker = (victim_node - 1) * 10
    status, _ = admin_call(
        watcher.admin, "POST", "/v1/topics", {"name": topic_name, "partitions": 3, "replication_factor": 3}
    )
    assert status == 201
    _wait_visible(cluster, topic_name, 3)
    before = {int(str(p["partition"])): p for p in _partitions(watcher, topic_name)}
    on_victim = [i for i, p in before.items() if p["leader"] == victim_broker]
    assert on_victim and all(len(p["isr"]) == 3 for p in before.values()), before  # type: ignore[arg-type]
    first = {i: [b"before-%d-%d" % (i, n) for n in range(20)] for i in range(3)}
    _produce(watcher.bootstrap, topic_name, first)  # acks=all: on all three replicas

    victim.signal_all(signal.SIGSTOP)
    try:
        _wait("the stopped broker to be fenced", lambda: _broker_status(watcher, victim_broker) == "fenced")
        now = {int(str(p["partition"])): p for p in _partitions(watcher, topic_name)}
        for i in on_victim:
            assert now[i]["leader"] not in (-1, victim_broker), now[i]  # a new leader from the ISR
            assert victim_broker not in now[i]["isr"]  # type: ignore[operator]
            assert int(str(now[i]["leader_epoch"])) == int(str(before[i]["leader_epoch"])) + 1
        during = {i: [b"during-%d-%d" % (i, n) for n in range(5)] for i in range(3)}
        _produce(watcher.bootstrap, topic_name, during)  # every partition takes writes, with two replicas in sync
        got = _read_all(watcher.bootstrap, topic_name, 3, 75)
        assert sorted(got) == sorted(v for d in (first, during) for vs in d.values() for v in vs)
    finally:
        victim.signal_all(signal.SIGCONT)

    caught_up = _wait("the resumed broker to rejoin every ISR", lambda: _isr_full(watcher, topic_name))
    print(f"broker {victim_broker} back in every ISR {caught_up:.2f} s after SIGCONT")
    after = {i: [b"after-%d" % i] for i in range(3)}
    _produce(victim.bootstrap, topic_name, after)
    for i in on_victim:  # hand leadership back: the old leader must now hold everything, and nothing twice
        status, moved = admin_call(
            victim.admin, "POST", f"/v1/partitions/{topic_name}/{i}/transfer_leadership", {"target": victim_broker}
        )
        assert status == 200 and moved["leader"] == victim_broker, moved
    _wait(
        "the victim to lead again",
        lambda: all(_partitions(victim, topic_name)[i]["leader"] == victim_broker for i in on_victim),
    )
    expected = sorted(v for d in (first, during, after) for vs in d.values() for v in vs)
    assert sorted(_read_all(victim.bootstrap, topic_name, 3, len(expected))) == expected


def test_sigkill_of_a_partition_leader_loses_no_acknowledged_record(cluster: Cluster, topic_name: str) -> None:
    """Writes with acks=all go on while the node leading the partition is SIGKILLed: every record the producer was
    told is written is read back from the new leader, and the restarted node catches up and rejoins the ISR."""
    leader = cluster.leader()
    survivor = cluster.nodes[leader]
    status, _ = admin_call(
        survivor.admin, "POST", "/v1/topics", {"name": topic_name, "partitions": 1, "replication_factor": 3}
    )
    assert status == 201
    _wait_visible(cluster, topic_name, 1)
    part = f"/v1/partitions/{topic_name}/0"
    led_by = int(str(admin_call(survivor.admin, "GET", part)[1]["leader"]))
    victim_node = led_by // 10 + 1
    if victim_node == leader:  # keep the Raft leader: move the partition's leadership to another node first
        target = next(b for b in (0, 10, 20) if b != led_by)
        assert admin_call(survivor.admin, "POST", f"{part}/transfer_leadership", {"target": target})[0] == 200
        victim_node = target // 10 + 1
    victim = cluster.nodes[victim_node]
    acked: list[bytes] = []
    failed: list[bytes] = []

    def report(err: object, msg: object) -> None:
        (failed if err is not None else acked).append(msg.value())  # type: ignore[attr-defined]

    producer = Producer(
        {"bootstrap.servers": survivor.bootstrap, "acks": "all", "message.timeout.ms": 30000, "linger.ms": 5}
    )
    killed = False
    for n in range(3000):
        producer.produce(topic_name, value=b"v-%05d" % n, partition=0, on_delivery=report)
        producer.poll(0)
        if n == 1000:
            victim.kill()  # SIGKILL of every process of the node leading the partition, mid-stream
            killed = True
        if n % 100 == 0:
            time.sleep(0.01)
    assert killed and producer.flush(60) == 0
    assert len(acked) > 1000, (len(acked), len(failed))
    got = set(_read_to_end(survivor.bootstrap, topic_name, 1))
    missing = [v for v in acked if v not in got]
    assert not missing, f"{len(missing)} acknowledged records lost, first {missing[:3]}"
    print(f"{len(acked)} acknowledged, {len(failed)} failed, all acknowledged read back after SIGKILL of the leader")
    victim.launch()
    victim.wait_ready()
    _wait("the restarted node to rejoin the ISR", lambda: _isr_full(survivor, topic_name))


def test_a_decommissioned_broker_is_drained_onto_the_other_nodes_without_losing_data(
    cluster: Cluster, topic_name: str
) -> None:
    node = cluster.nodes[1]
    status, _ = admin_call(
        node.admin, "POST", "/v1/topics", {"name": topic_name, "partitions": 6, "replication_factor": 2}
    )
    assert status == 201
    _wait_visible(cluster, topic_name, 6)
    values = {i: [b"d-%d-%d" % (i, n) for n in range(20)] for i in range(6)}
    _produce(node.bootstrap, topic_name, values)
    leaving = 20
    assert any(leaving in p["replicas"] for p in _partitions(node, topic_name))  # type: ignore[operator]
    status, b = admin_call(cluster.nodes[2].admin, "PUT", f"/v1/brokers/{leaving}/decommission")
    assert status == 200 and b["status"] == "decommissioning", b
    took = _wait("the broker to be drained", lambda: _broker_status(node, leaving) == "drained")
    print(f"broker {leaving} drained in {took:.2f} s")
    for p in _partitions(node, topic_name):
        assert leaving not in p["replicas"] and len(p["replicas"]) == 2, p  # type: ignore[operator,arg-type]
        assert sorted(p["isr"]) == sorted(p["replicas"]) and p["leader"] != leaving, p  # type: ignore[type-var]
    expected = sorted(v for vs in values.values() for v in vs)
    assert sorted(_read_all(node.bootstrap, topic_name, 6, len(expected))) == expected


def test_the_three_node_script_starts_a_working_cluster(tmp_path: Path) -> None:
    """``bash ops/cluster3.sh DIR`` as the README shows it (ports moved with RAFKA_PORT_BASE so runs do not collide):
    three nodes form one quorum, a replicated topic is served, and stopping the script stops every node."""
    base = free_port_range(560)
    repo = Path(__file__).resolve().parents[2]
    with open(tmp_path / "cluster3.log", "wb") as log:
        proc = subprocess.Popen(
            ["bash", str(repo / "ops" / "cluster3.sh"), str(tmp_path / "cluster")],
            env={**os.environ, "RAFKA_PORT_BASE": str(base)},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    admins = [f"http://127.0.0.1:{base + 552 + i}" for i in range(3)]
    bootstrap = ",".join(f"127.0.0.1:{base + 100 * i}" for i in range(3))
    try:

        def all_ready() -> bool:
            with contextlib.suppress(OSError, ValueError):
                return all(admin_call(a, "GET", "/v1/status/ready")[0] == 200 for a in admins)
            return False

        _wait("the three nodes to be ready", all_ready, timeout_s=90)
        _, status = admin_call(admins[0], "GET", "/v1/controller")
        assert [v["id"] for v in status["voters"]] == [1, 2, 3] and status["leader"] in (1, 2, 3)
        code, _ = admin_call(
            admins[1], "POST", "/v1/topics", {"name": "orders", "partitions": 3, "replication_factor": 3}
        )
        assert code == 201
        _, brokers = admin_call(admins[2], "GET", "/v1/brokers")
        assert sorted(b["broker_id"] for b in brokers) == [10, 20, 30]
        values = {p: [b"order-%d-%d" % (p, i) for i in range(10)] for p in range(3)}
        _produce(bootstrap, "orders", values)
        assert sorted(_read_all(bootstrap, "orders", 3, 30)) == sorted(v for vs in values.values() for v in vs)
        tree = [psutil.Process(proc.pid), *psutil.Process(proc.pid).children(recursive=True)]
        titles = [" ".join(p.cmdline()) for p in tree]
        assert len([t for t in titles if t.startswith("rafka_shards: node ") and " supervisor " in t]) == 3
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(60)
    assert wait_gone(tree, timeout_s=30) == [], "a node outlived the script"
